"""The cluster registry, register-cluster flow and label watcher, on the local fleet and a real Prefect."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fleetflow import events
from fleetflow.errors import APIUnavailableError
from fleetflow.flows.register_cluster import register_cluster
from fleetflow.labels import LabelEdit
from fleetflow.registry import Registry
from fleetflow.watcher import LabelWatcher
from tests.support.local_fleet import LocalFleet
from tests.support.prefect_events import read_events, wait_for_events
from tests.support.watch_support import WatchProcess

pytestmark = pytest.mark.integration

FLEETFLOW = str(Path(sys.executable).parent / "fleetflow")


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLEETFLOW, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


_created: list[str] = []


def unique(prefix: str) -> str:
    """A fresh cluster name, deregistered after the test (other modules share the registry)."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    _created.append(name)
    return name


@pytest.fixture(scope="module")
def registry(local_fleet: LocalFleet, prefect_api: str) -> Registry:
    reg = Registry(local_fleet.client("mgmt"))
    reg.install()
    return reg


@pytest.fixture(autouse=True)
def _use_the_local_fleet(monkeypatch: pytest.MonkeyPatch, local_fleet: LocalFleet) -> Iterator[None]:
    """In-process flows find the management cluster as a user's shell would: KUBECONFIG + context."""
    monkeypatch.setenv("KUBECONFIG", str(local_fleet.kubeconfig))
    monkeypatch.setenv("FLEETFLOW_MGMT_CONTEXT", "mgmt")
    yield
    registry = Registry(local_fleet.client("mgmt"))
    while _created:
        registry.deregister(_created.pop(), delete_namespace=True)


def register(local_fleet: LocalFleet, name: str, context: str, labels: dict[str, str]) -> None:
    register_cluster(
        name=name, context=context, kubeconfig=str(local_fleet.kubeconfig), labels=labels, mgmt_context="mgmt"
    )


def rows(listing: str) -> dict[str, list[str]]:
    lines = listing.strip().splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "READY", "VERSION", "LABELS"]
    return {line.split()[1]: line.split() for line in lines[1:]}


def test_init_registers_the_seed_clusters_and_list_reads_like_sveltos(
    registry_env: dict[str, str], registry: Registry
) -> None:
    init = cli(registry_env, "init", "--mgmt-context", "mgmt")
    assert init.returncode == 0, init.stderr
    for name, labels in (("service-cluster", "type=services"), ("workload-cluster", "postgres=required")):
        done = cli(registry_env, "cluster", "register", name, "--context", name, "--labels", labels)
        assert done.returncode == 0, done.stderr
        assert f"cluster/{name} registered" in done.stdout

    listed = rows(cli(registry_env, "cluster", "list").stdout)
    assert listed["mgmt"] == ["mgmt", "mgmt", "true", "v1.34.4", "type=mgmt"]
    assert listed["service-cluster"] == [
        "service-cluster",
        "service-cluster",
        "true",
        "v1.34.4",
        "type=services",
    ]
    assert listed["workload-cluster"][2:] == ["true", "v1.34.4", "postgres=required"]

    # Re-registering updates labels and credentials; nothing is duplicated.
    again = cli(
        registry_env,
        "cluster",
        "register",
        "service-cluster",
        "--context",
        "service-cluster",
        "--labels",
        "type=services,tier=gold",
    )
    assert again.returncode == 0, again.stderr
    listed = rows(cli(registry_env, "cluster", "list", "-l", "type=services").stdout)
    assert list(listed) == ["service-cluster"]
    assert listed["service-cluster"][4] == "tier=gold,type=services"
    same_name = [r for r in registry.list() if r.name == "service-cluster"]
    assert len(same_name) == 1

    # The stored kubeconfig reaches the cluster it names, and nothing else is in it.
    secret = registry.mgmt.get("v1", "Secret", "service-cluster-kubeconfig", "service-cluster")
    stored = yaml.safe_load(base64.b64decode(secret["data"]["kubeconfig"]))
    assert [c["name"] for c in stored["contexts"]] == ["service-cluster"]
    assert registry.client("service-cluster").version()["gitVersion"] == "v1.34.4"


def test_printer_columns_match_the_seed_table(registry: Registry) -> None:
    api = registry.mgmt.api
    response = api.call_api(
        "GET",
        f"{api.configuration.host}/apis/fleetflow.io/v1alpha1/fleetclusters",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    response.read()
    table = json.loads(response.data)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Ready", "Version"]


def test_label_edits_are_kubectl_style(
    registry_env: dict[str, str], local_fleet: LocalFleet, registry: Registry
) -> None:
    name = unique("labels")
    register(local_fleet, name, "workload-cluster", {"a": "1", "b": "2"})
    edited = cli(registry_env, "cluster", "label", name, "a=10", "c=3", "b-")
    assert edited.returncode == 0, edited.stderr
    assert registry.require(name).labels == {"a": "10", "c": "3"}
    bad = cli(registry_env, "cluster", "label", name, "bad key=1")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "invalid label" in bad.stderr
    assert registry.require(name).labels == {"a": "10", "c": "3"}
    gone = cli(registry_env, "cluster", "deregister", name)
    assert gone.returncode == 0, gone.stderr
    assert registry.get(name) is None
    assert registry.mgmt.get_or_none("v1", "Secret", f"{name}-kubeconfig", name) is None


@pytest.fixture
def watcher(registry: Registry, prefect_api: str) -> Iterator[list[events.FleetEvent]]:
    """A label watcher thread emitting to the session's Prefect server; yields what it emitted."""
    emitted: list[events.FleetEvent] = []

    def emit(batch: list[events.FleetEvent]) -> None:
        events.emit_many(batch)
        emitted.extend(batch)

    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=LabelWatcher(registry.mgmt, emit, watch_timeout=2).run, args=(stop, ready)
    )
    thread.start()
    assert ready.wait(60), "awaited the label watcher's first sync"
    yield emitted
    stop.set()
    thread.join(30)
    assert not thread.is_alive(), "the watcher did not stop"


def test_relabel_emits_exactly_one_labeled_event(
    local_fleet: LocalFleet, registry: Registry, prefect_api: str, watcher: list[events.FleetEvent]
) -> None:
    name = unique("relabel")
    register(local_fleet, name, "workload-cluster", {"postgres": "required", "tier": "bronze"})
    resource = f"fleetflow.cluster.{name}"
    wait_for_events(prefect_api, events.CLUSTER_REGISTERED, resource)

    registry.edit_labels(name, LabelEdit.parse(["type=app", "tier=gold", "postgres-"]))
    [labeled] = wait_for_events(prefect_api, events.CLUSTER_LABELED, resource)
    assert labeled["payload"]["added"] == {"type": "app"}
    assert labeled["payload"]["changed"] == {"tier": {"from": "bronze", "to": "gold"}}
    assert labeled["payload"]["removed"] == {"postgres": "required"}
    assert labeled["resource"]["fleetflow.label.type"] == "app"
    assert "fleetflow.label.postgres" not in labeled["resource"]

    # A later change is stored after the first: by then any duplicate would be stored too.
    registry.edit_labels(name, LabelEdit.parse(["sentinel=1"]))
    wait_for_events(
        prefect_api,
        events.CLUSTER_LABELED,
        resource,
        where=lambda e: e["payload"]["added"] == {"sentinel": "1"},
    )
    assert len(read_events(prefect_api, events.CLUSTER_LABELED, resource)) == 2
    assert [e.event for e in watcher if e.resource["prefect.resource.id"] == resource] == [
        events.CLUSTER_REGISTERED,
        events.CLUSTER_LABELED,
        events.CLUSTER_LABELED,
    ]


def test_a_replayed_event_is_stored_once(prefect_api: str) -> None:
    name = unique("replay")
    event = events.FleetEvent(
        events.CLUSTER_LABELED,
        events.cluster_resource(name, {"a": "1"}),
        events.event_id("uid-x", "labeled", "42"),
        {"cluster": name},
    )
    events.emit(event)
    events.emit(event)
    events.emit(events.FleetEvent(events.CLUSTER_DEREGISTERED, event.resource, events.event_id("uid-x", "d")))
    wait_for_events(prefect_api, events.CLUSTER_DEREGISTERED, f"fleetflow.cluster.{name}")
    assert len(read_events(prefect_api, events.CLUSTER_LABELED, f"fleetflow.cluster.{name}")) == 1


def test_changes_made_while_the_watcher_is_down_are_emitted_once(
    registry_env: dict[str, str], local_fleet: LocalFleet, registry: Registry, prefect_api: str
) -> None:
    name, leaving = unique("offline"), unique("leaving")
    register(local_fleet, name, "workload-cluster", {"postgres": "required"})
    register(local_fleet, leaving, "service-cluster", {"type": "services"})
    first = WatchProcess(registry_env)
    first.wait_for("synced")
    first.stop()
    wait_for_events(prefect_api, events.CLUSTER_REGISTERED, f"fleetflow.cluster.{leaving}")

    # While no watcher runs: relabel one cluster and deregister another.
    registry.edit_labels(name, LabelEdit.parse(["type=app"]))
    registry.deregister(leaving)

    second = WatchProcess(registry_env)
    second.wait_for("synced")
    second.stop()
    [labeled] = wait_for_events(prefect_api, events.CLUSTER_LABELED, f"fleetflow.cluster.{name}")
    assert labeled["payload"]["added"] == {"type": "app"}
    wait_for_events(prefect_api, events.CLUSTER_DEREGISTERED, f"fleetflow.cluster.{leaving}")

    third = WatchProcess(registry_env)
    third.wait_for("synced")
    third.stop()
    assert not [line for line in third.seen if "emitted" in line and (name in line or leaving in line)], (
        "a restart must not emit again what was already emitted: " + "".join(third.seen)
    )
    assert len(read_events(prefect_api, events.CLUSTER_LABELED, f"fleetflow.cluster.{name}")) == 1


def test_bad_input_fails_clearly_and_leaves_nothing(
    registry_env: dict[str, str], registry: Registry, tmp_path: Path
) -> None:
    before = {r.name for r in registry.list()}
    bad_name = cli(registry_env, "cluster", "register", "Bad_Name", "--context", "workload-cluster")
    assert bad_name.returncode == 2
    assert bad_name.stderr.strip() == (
        "error: invalid cluster name 'Bad_Name': must be a DNS-1123 label (lowercase letters, digits and "
        "'-', starting and ending with a letter or digit, at most 63 characters)"
    )
    bad_labels = cli(
        registry_env,
        "cluster",
        "register",
        "fine",
        "--context",
        "workload-cluster",
        "--labels",
        "type=ok,-bad=x",
    )
    assert bad_labels.returncode == 2
    assert "invalid label key '-bad'" in bad_labels.stderr

    unreachable_config = tmp_path / "unreachable"
    config = yaml.safe_load(Path(registry_env["KUBECONFIG"]).read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    unreachable_config.write_text(yaml.safe_dump(config))
    context = config["contexts"][0]["name"]
    name = unique("unreachable")
    down = cli(
        registry_env,
        "cluster",
        "register",
        name,
        "--context",
        context,
        "--kubeconfig",
        str(unreachable_config),
        "--probe-retries",
        "0",
    )
    assert down.returncode == 1
    assert re.search(
        rf"^error: cluster '{name}' cannot be reached through context '{context}': "
        rf"read /version of {context}: cannot reach the API server \(\w+\)$",
        down.stderr,
        re.MULTILINE,
    ), down.stderr

    malformed = tmp_path / "malformed"
    malformed.write_text("apiVersion: v1\nclusters: [\n")
    broken = cli(
        registry_env,
        "cluster",
        "register",
        unique("malformed"),
        "--context",
        "x",
        "--kubeconfig",
        str(malformed),
    )
    assert broken.returncode == 1
    assert f"kubeconfig {malformed} is not valid YAML" in broken.stderr

    assert {r.name for r in registry.list()} == before
    assert registry.mgmt.get_or_none("v1", "Namespace", name) is None


def test_an_unreachable_registered_cluster_is_recorded_not_ready(
    local_fleet: LocalFleet, registry: Registry, tmp_path: Path
) -> None:
    name = unique("flaky")
    register(local_fleet, name, "service-cluster", {"type": "services"})
    config = yaml.safe_load(local_fleet.kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = "https://127.0.0.1:1"
    broken = tmp_path / "kubeconfig"
    broken.write_text(yaml.safe_dump(config))
    reason = r"read /version of service-cluster: cannot reach the API server \(\w+\)"
    said = rf"^cluster '{name}' cannot be reached through context 'service-cluster': {reason}$"
    with pytest.raises(APIUnavailableError, match=said):
        register_cluster(
            name=name, context="service-cluster", kubeconfig=str(broken), mgmt_context="mgmt", probe_retries=0
        )
    record = registry.require(name)
    assert record.ready is False
    assert record.reason == "Unreachable"
    assert re.fullmatch(reason, record.message), f"the probe's reason is recorded: {record.message!r}"
    assert record.labels == {"type": "services"}, "a failed probe keeps the registration's labels"
