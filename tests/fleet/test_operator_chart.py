"""The real operator's chart, made from a release manifest: what goes where, and what is templated."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleetflow_dev import binaries
from fleetflow_dev.cnpg import operator_chart

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: cnpg-system
---
# a comment that stays with its CRD
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: clusters.postgresql.cnpg.io
spec:
  group: postgresql.cnpg.io
  names: {kind: Cluster, plural: clusters}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        description: 'Templates such as {{ .Values.x }} are left alone in crds/'
        type: object
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cnpg-default-monitoring
  namespace: cnpg-system
data:
  queries: |
    query: "SELECT '{{ not a template }}'"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cnpg-controller-manager
  namespace: cnpg-system
spec:
  selector:
    matchLabels: {app: cnpg}
  template:
    metadata:
      labels: {app: cnpg}
    spec:
      containers:
      - name: manager
        image: ghcr.io/cloudnative-pg/cloudnative-pg:1.24.1
        imagePullPolicy: Always
        env:
        - name: OPERATOR_IMAGE_NAME
          value: ghcr.io/cloudnative-pg/cloudnative-pg:1.24.1
        - name: POSTGRES_IMAGE_NAME
          value: ghcr.io/cloudnative-pg/postgresql:16
        - name: OPERATOR_NAMESPACE
          valueFrom:
            fieldRef: {fieldPath: metadata.namespace}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: cnpg-validating-webhook-configuration
webhooks:
- name: vcluster.cnpg.io
  admissionReviewVersions: [v1]
  sideEffects: None
  clientConfig:
    service:
      name: cnpg-webhook-service
      namespace: cnpg-system
      path: /validate-postgresql-cnpg-io-v1-cluster
"""


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    manifest = tmp_path / "release.yaml"
    manifest.write_text(MANIFEST)
    return operator_chart.build(manifest, tmp_path / "chart")


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_crds_go_to_crds_everything_else_but_the_namespace_to_templates(chart: Path) -> None:
    assert _files(chart) == ["Chart.yaml", "crds", "templates", "values.yaml"]
    assert _files(chart / "crds") == ["clusters.postgresql.cnpg.io.yaml"]
    assert _files(chart / "templates") == [
        "configmap-cnpg-default-monitoring.yaml",
        "deployment-cnpg-controller-manager.yaml",
        "validatingwebhookconfiguration-cnpg-validating-webhook-configuration.yaml",
    ]
    crd = (chart / "crds" / "clusters.postgresql.cnpg.io.yaml").read_text()
    assert crd.startswith("# a comment that stays with its CRD\n")  # verbatim: helm never templates crds/
    assert "{{ .Values.x }}" in crd


def test_chart_metadata_and_documented_values(chart: Path) -> None:
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert (meta["name"], meta["version"], meta["appVersion"]) == ("cloudnative-pg", "0.22.1-local", "1.24.1")
    text = (chart / "values.yaml").read_text()
    assert text.count("\n#") >= 3  # commented
    values = yaml.safe_load(text)
    assert values == {
        "image": {
            "repository": "docker.io/fleetflow/cloudnative-pg",
            "tag": "1.24.1",
            "pullPolicy": "IfNotPresent",
        },
        "postgresImage": "docker.io/fleetflow/postgresql:15",
    }


def test_deployment_image_pull_policy_and_env_are_values(chart: Path) -> None:
    text = (chart / "templates" / "deployment-cnpg-controller-manager.yaml").read_text()
    assert "ghcr.io" not in text
    assert 'image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"' in text
    assert "imagePullPolicy: {{ .Values.image.pullPolicy | quote }}" in text
    assert "Always" not in text
    assert "value: {{ .Values.postgresImage | quote }}" in text
    assert text.count("POSTGRES_IMAGE_NAME") == 1  # replaced, not added twice
    assert "namespace: {{ .Release.Namespace }}" in text
    assert "fieldPath: metadata.namespace" in text


def test_literal_braces_in_templates_are_escaped(chart: Path) -> None:
    text = (chart / "templates" / "configmap-cnpg-default-monitoring.yaml").read_text()
    assert """SELECT '{{ "{{" }} not a template }}'""" in text


def test_a_manifest_without_the_operator_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "release.yaml"
    manifest.write_text(MANIFEST.split("---\napiVersion: apps/v1")[0])
    with pytest.raises(Exception, match="no Deployment cnpg-controller-manager"):
        operator_chart.build(manifest, tmp_path / "chart")
    assert not (tmp_path / "chart").exists()


def _helm() -> Path | None:
    found, _ = binaries.locate()
    return found.paths.get("helm") or (Path(p) if (p := shutil.which("helm")) else None)


def _render(helm: Path, chart: Path, *extra: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [str(helm), "template", "cnpg", str(chart), "--namespace", "cnpg-system", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_helm_renders_it(chart: Path) -> None:
    helm = _helm()
    if helm is None:
        pytest.skip("no helm binary cached or on PATH")
    lint = subprocess.run(
        [str(helm), "lint", str(chart)], capture_output=True, text=True, timeout=60, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    objects = {(o["kind"], o["metadata"]["name"]): o for o in _render(helm, chart)}
    assert ("Namespace", "cnpg-system") not in objects
    assert ("CustomResourceDefinition", "clusters.postgresql.cnpg.io") not in objects  # crds/ is not rendered
    config_map = objects[("ConfigMap", "cnpg-default-monitoring")]
    assert config_map["data"]["queries"] == "query: \"SELECT '{{ not a template }}'\"\n"
    deployment = objects[("Deployment", "cnpg-controller-manager")]
    assert deployment["metadata"]["namespace"] == "cnpg-system"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "docker.io/fleetflow/cloudnative-pg:1.24.1"
    assert container["imagePullPolicy"] == "IfNotPresent"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["POSTGRES_IMAGE_NAME"] == "docker.io/fleetflow/postgresql:15"
    assert env["OPERATOR_IMAGE_NAME"] == "docker.io/fleetflow/cloudnative-pg:1.24.1"
    webhook = objects[("ValidatingWebhookConfiguration", "cnpg-validating-webhook-configuration")]
    assert webhook["webhooks"][0]["clientConfig"]["service"]["namespace"] == "cnpg-system"

    overridden = _render(
        helm,
        chart,
        "--set",
        "image.tag=dev",
        "--set",
        "image.pullPolicy=Never",
        "--set",
        "postgresImage=pg:x",
    )
    (deployment,) = [o for o in overridden if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "docker.io/fleetflow/cloudnative-pg:dev"
    assert container["imagePullPolicy"] == "Never"
    assert {e["name"]: e.get("value") for e in container["env"]}["POSTGRES_IMAGE_NAME"] == "pg:x"
