"""A Helm chart of the REAL CloudNativePG operator, made from CloudNativePG's own release manifest.

The published chart (``cloudnative-pg`` 0.22.1 at https://cloudnative-pg.github.io/charts) is
not reachable from here, but the operator's Go module is, and it holds the release manifest
``releases/cnpg-1.24.1.yaml`` (the same CRDs, RBAC, Deployment and webhooks as chart 0.22.1).
This module turns that manifest into a chart named ``cloudnative-pg`` that installs like the
published one (``helm upgrade --install cnpg CHART --namespace cnpg-system --create-namespace``,
what ``fleetflow run install-operator --local-chart`` does):

- ``crds/`` holds every CustomResourceDefinition, one file each, verbatim (helm creates them on
  the first install and never templates them);
- ``templates/`` holds every other object verbatim, except that the ``cnpg-system`` Namespace
  is dropped (helm's ``--create-namespace`` makes it), ``cnpg-system`` becomes the release's
  namespace, any ``{{`` is escaped, and the operator Deployment runs
  ``.Values.image.repository:.Values.image.tag`` with ``.Values.image.pullPolicy`` and
  ``POSTGRES_IMAGE_NAME`` = ``.Values.postgresImage`` (and ``OPERATOR_IMAGE_NAME``, which the
  operator uses for the init container that copies its instance manager into every PostgreSQL
  pod, is the operator image too).

The images are the local fleet's own (no registry is reachable from the nodes), hence the
``IfNotPresent`` default. Built once into the binaries cache, keyed by the CloudNativePG version
and :data:`RECIPE`, in a scratch directory renamed into place under a file lock.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleetflow.errors import BootstrapError
from fleetflow_dev import binaries, versions
from fleetflow_dev.binaries import Progress

MODULE = "github.com/cloudnative-pg/cloudnative-pg"
VERSION = versions.CLOUDNATIVE_PG  # v1.24.1: the operator of chart cloudnative-pg 0.22.1
CHART_NAME = "cloudnative-pg"
CHART_VERSION = "0.22.1-local"
RECIPE = 1  # bump when the chart this module makes changes: a new cache directory is built
RELEASE_NAMESPACE = "cnpg-system"  # what the manifest hard-codes; templated as the release's
DEPLOYMENT = "cnpg-controller-manager"
CONTAINER = "manager"
OPERATOR_IMAGE = "docker.io/fleetflow/cloudnative-pg"
POSTGRES_IMAGE = "docker.io/fleetflow/postgresql:15"

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~1 MB of CRDs
_DOC_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)
_NAMESPACE_LINE = re.compile(rf"^([ \t]*(?:- )?namespace: ){RELEASE_NAMESPACE}[ \t]*$", re.MULTILINE)
# Placeholders put into the Deployment before it is written, replaced by template actions after
# every literal "{{" of the text has been escaped.
_IMAGE = "__FLEETFLOW_OPERATOR_IMAGE__"
_PULL_POLICY = "__FLEETFLOW_PULL_POLICY__"
_POSTGRES_IMAGE = "__FLEETFLOW_POSTGRES_IMAGE__"
_ACTIONS = {
    _IMAGE: '"{{ .Values.image.repository }}:{{ .Values.image.tag }}"',
    _PULL_POLICY: "{{ .Values.image.pullPolicy | quote }}",
    _POSTGRES_IMAGE: "{{ .Values.postgresImage | quote }}",
}


def app_version() -> str:
    return VERSION.removeprefix("v")


def chart_yaml() -> str:
    return f"""\
apiVersion: v2
name: {CHART_NAME}
description: >-
  CloudNativePG {VERSION}, the real operator, as a Helm chart made by fleetflow's local fleet
  from CloudNativePG's own release manifest (releases/cnpg-{app_version()}.yaml of the Go module
  {MODULE}), because the published chart repository is not reachable from here. It installs
  like chart cloudnative-pg 0.22.1 (release cnpg in namespace cnpg-system); the operator and
  PostgreSQL images are the local fleet's.
type: application
version: {CHART_VERSION}
appVersion: "{app_version()}"
home: https://cloudnative-pg.io
keywords:
  - postgresql
  - cloudnative-pg
  - operator
annotations:
  fleetflow.io/built-from: "{MODULE}@{VERSION} releases/cnpg-{app_version()}.yaml"
"""


def values_yaml() -> str:
    return f"""\
# CloudNativePG {VERSION} (the real operator) for fleetflow's local fleet, made from
# CloudNativePG's release manifest. No registry is reachable from the fleet's nodes: the images
# below are imported into each node's containerd by the fleet, and must not be pulled.

image:
  # The operator image. It holds the manager binary as /bin/manager_amd64 (and /manager); the
  # operator also runs it as the init container that copies the instance manager into every
  # PostgreSQL pod (env OPERATOR_IMAGE_NAME), so the same reference is used there.
  repository: {OPERATOR_IMAGE}
  tag: "{app_version()}"
  # IfNotPresent (or Never): the image is on the node already; a pull would fail.
  pullPolicy: IfNotPresent

# The PostgreSQL image of every Cluster that names none (env POSTGRES_IMAGE_NAME of the
# operator): PostgreSQL's binaries on PATH and user postgres with uid 26, as CloudNativePG's.
postgresImage: {POSTGRES_IMAGE}
"""


@dataclass(frozen=True)
class Document:
    """One object of the release manifest: its text as released, and what it is."""

    text: str
    kind: str
    name: str

    @property
    def filename(self) -> str:
        if self.kind == "CustomResourceDefinition":
            return f"{self.name}.yaml"
        return f"{self.kind.lower()}-{self.name}.yaml"


def split_manifest(text: str) -> list[Document]:
    """The objects of a multi-document YAML manifest, each with its own text (comments kept)."""
    documents = []
    for chunk in _DOC_SEPARATOR.split(text):
        obj = _load(chunk)
        if obj is None:
            continue
        if not isinstance(obj, dict) or "kind" not in obj or "metadata" not in obj:
            raise BootstrapError(f"the release manifest holds a document that is no object: {chunk[:80]!r}")
        documents.append(Document(chunk.strip("\n") + "\n", str(obj["kind"]), str(obj["metadata"]["name"])))
    return documents


def escape_braces(text: str) -> str:
    """Text helm renders back to ``text``: every ``{{`` becomes the action printing it."""
    return text.replace("{{", '{{ "{{" }}')


def operator_deployment(obj: dict[str, Any]) -> dict[str, Any]:
    """The operator Deployment with its image, pull policy and images in env made placeholders."""
    containers = obj["spec"]["template"]["spec"]["containers"]
    matches = [c for c in containers if c.get("name") == CONTAINER] or containers[:1]
    if not matches:
        raise BootstrapError(f"Deployment {DEPLOYMENT} of the release manifest has no container")
    container = matches[0]
    replaced = {k: v for k, v in container.items() if k != "imagePullPolicy"}
    container.clear()
    for key, value in replaced.items():  # the same order, the pull policy next to the image
        container[key] = _IMAGE if key == "image" else value
        if key == "image":
            container["imagePullPolicy"] = _PULL_POLICY
    container.setdefault("image", _IMAGE)
    container.setdefault("imagePullPolicy", _PULL_POLICY)
    env = [e for e in container.get("env") or [] if e.get("name") != "POSTGRES_IMAGE_NAME"]
    for entry in env:
        if entry.get("name") == "OPERATOR_IMAGE_NAME":
            entry.pop("valueFrom", None)
            entry["value"] = _IMAGE
    if not any(e.get("name") == "OPERATOR_IMAGE_NAME" for e in env):
        env.append({"name": "OPERATOR_IMAGE_NAME", "value": _IMAGE})
    env.append({"name": "POSTGRES_IMAGE_NAME", "value": _POSTGRES_IMAGE})
    container["env"] = env
    return obj


def template_text(document: Document) -> str:
    """The template of one non-CRD object (see the module docstring)."""
    text = document.text
    if document.kind == "Deployment" and document.name == DEPLOYMENT:
        obj = operator_deployment(_load(text))
        text = yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1 << 16)
    text = escape_braces(text)
    text = _NAMESPACE_LINE.sub(r"\1{{ .Release.Namespace }}", text)
    for placeholder, action in _ACTIONS.items():
        text = text.replace(f"'{placeholder}'", action).replace(placeholder, action)
    return text


def build(manifest: Path, destination: Path) -> Path:
    """Write the chart made from the release ``manifest`` into ``destination`` (a new directory)."""
    documents = split_manifest(manifest.read_text())
    if not any(d.kind == "Deployment" and d.name == DEPLOYMENT for d in documents):
        raise BootstrapError(f"{manifest} holds no Deployment {DEPLOYMENT}: not a CloudNativePG release")
    destination.mkdir(parents=True)
    (destination / "crds").mkdir()
    (destination / "templates").mkdir()
    (destination / "Chart.yaml").write_text(chart_yaml())
    (destination / "values.yaml").write_text(values_yaml())
    for document in documents:
        if document.kind == "Namespace":
            continue  # helm's --create-namespace makes the release's namespace
        if document.kind == "CustomResourceDefinition":
            (destination / "crds" / document.filename).write_text(document.text)
        else:
            (destination / "templates" / document.filename).write_text(template_text(document))
    return destination


def release_manifest(scratch: Path, progress: Progress) -> Path:
    """CloudNativePG's release manifest: the one kept beside the built operator, else the module's."""
    kept = binaries.cache_root() / binaries.CLOUDNATIVE_PG.cache_key / "cnpg-release.yaml"
    if kept.is_file():
        return kept
    go = shutil.which("go")
    if go is None:
        raise BootstrapError(
            f"cannot fetch CloudNativePG {VERSION}'s release manifest: no Go toolchain ('go')"
        )
    progress(
        f"fetching CloudNativePG {VERSION}'s release manifest from the Go module proxy (first time only)"
    )
    info = json.loads(binaries._go(go, ["mod", "download", "-json", f"{MODULE}@{VERSION}"], scratch))
    source = Path(info["Dir"]) / "releases" / f"cnpg-{app_version()}.yaml"
    if not source.is_file():
        raise BootstrapError(f"{MODULE}@{VERSION} holds no releases/{source.name}")
    return source


def chart_dir(progress: Progress = binaries._silent) -> Path:
    """The built chart (cached per CloudNativePG version and recipe); builds it on first use."""
    key = f"cnpg-operator-chart-{VERSION}-r{RECIPE}"
    final = binaries.cache_root() / key
    if (final / "Chart.yaml").is_file():
        return final  # renamed into place complete, never written in place
    with binaries._lock(binaries.cache_root() / f".{key}.lock"):
        if (final / "Chart.yaml").is_file():
            return final  # built by another process while we waited
        scratch = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=binaries.cache_root()))
        try:
            chart = build(release_manifest(scratch, progress), scratch / "chart")
            if final.exists():
                shutil.rmtree(final)
            chart.rename(final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        progress(f"built the CloudNativePG {VERSION} operator chart into {final}")
    return final


def _load(text: str) -> Any:
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader: libyaml's CSafeLoader or SafeLoader


class _Dumper(yaml.SafeDumper):
    """PyYAML's YAML 1.1 leaves ``y``/``n`` plain, which Go's YAML reads as booleans: quote them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if value in {"y", "Y", "n", "N"} else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)
