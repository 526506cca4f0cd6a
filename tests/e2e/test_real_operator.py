"""The seed's chain and a Database request's life on the real CloudNativePG, on real nodes.

All on the one platform ``fleetflow demo`` left running (the ``seed`` fixture,
:func:`tests.support.e2e_seed.running_seed`), each test in a namespace of its own, in this
order; the last one stops the platform and checks the host:

1. the demo's chain: 3/3 instances, 2 streaming replicas, pods on the service cluster's node,
   the todo-table Job succeeded on the workload cluster's node, the table there;
2. failover: the primary's pod deleted, CloudNativePG promotes a replica, the request says
   Ready=False/Unavailable and then Ready again, the delivered password opens the new primary
   through the ``-rw`` LoadBalancer;
3. rotation: a new password in the CNPG ``-app`` Secret is set on the role by CloudNativePG's
   instance manager and delivered next to the request; the old one is refused;
4. Retain: a request deleted and re-created under its name finds its rows again;
5. a node's kubelet and containerd restarted while a request is being provisioned: it becomes
   Ready, with exactly one CNPG Cluster;
6. ``fleetflow down --local`` leaves nothing behind.

Only the failover needs a replica: its request asks for 2 instances, the others for 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
from fleetflow_dev import binaries
from fleetflow_dev.manager import Fleet

from fleetflow.databases import crd
from fleetflow.databases.spec import RequestRef, cnpg_name
from fleetflow.kube import KubeClient
from fleetflow.kube.hub import hub
from fleetflow.kube.informer import SYNCED, Informer
from tests.support.e2e_seed import (
    CNPG,
    HEALTHY,
    SERVICE,
    WORKLOAD,
    HostSnapshot,
    Seed,
    ask,
    condition,
    decoded,
    delivered,
    kubectl,
    load_balancer_address,
    mounts_under,
    processes_mentioning,
    psql,
    psql_within,
    wait_ready,
    watch,
)
from tests.support.eventually import eventually

# The first test also waits for the demo (up to 15 minutes), whichever test that is.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

SEED_CLUSTER = f"cluster-{WORKLOAD}"  # the demo's CNPG Cluster, namespace workload-cluster


def _stages(output: str) -> dict[str, str]:
    """The demo's closing table: stage -> result."""
    _, _, table = output.rpartition("\nSTAGE ")
    rows = {}
    for line in table.splitlines()[1:]:
        if m := re.match(r"^(\S.*?)\s{2,}(\d+\.\d+)\s{2,}(.*)$", line):
            rows[m.group(1)] = m.group(3).strip()
    return rows


def _healthy(obj: dict[str, Any] | None) -> bool:
    st = (obj or {}).get("status") or {}
    ok = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
    return st.get("phase") == HEALTHY and ok


def _node_ready(node: dict[str, Any] | None) -> bool:
    conditions = ((node or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_the_demo_runs_the_seeds_chain_on_real_nodes(seed: Seed) -> None:
    tail = "\n".join(seed.output.splitlines()[-40:])
    assert seed.returncode == 0, f"fleetflow demo exited {seed.returncode}:\n{tail}\n{seed.tails()}"
    print(f"fleetflow demo: {seed.demo_seconds:.1f} s")
    stages = _stages(seed.output)
    assert re.search(r"All \d+ stages verified", seed.output), tail
    assert stages.get("CNPG replicas ready on service-cluster", "").startswith("3/3 instances ready"), stages
    assert stages.get("todo-table Job Succeeded on workload-cluster") == "Succeeded", stages
    assert "table todo present" in stages.get("delivered credentials verified against PostgreSQL", ""), stages
    assert stages.get(f"Database of the label listed on {WORKLOAD} (kubectl get databases -A)", "").endswith(
        "READY True"
    ), stages

    # The clusters' registrations are runs of the platform's Prefect server, which the UI shows,
    # not of a temporary one the demo's process started for itself.
    assert "temporary server" not in seed.output, tail
    ui = re.findall(r"Prefect UI: (http://\S+)", seed.output)[-1]  # the demo's last line
    body = json.dumps({"flows": {"name": {"any_": ["register-cluster"]}}}).encode()
    request = urllib.request.Request(  # noqa: S310 (the platform's own http URL)
        f"{ui}/api/flow_runs/filter", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (the platform's own URL)
        runs = json.loads(answer.read())
    registered = sorted(r["parameters"].get("name", "") for r in runs if r["state_type"] == "COMPLETED")
    assert registered == ["mgmt", SERVICE, WORKLOAD], [(r["parameters"], r["state_type"]) for r in runs]

    service, workload = seed.client(SERVICE), seed.client(WORKLOAD)
    cluster = service.get(CNPG, "Cluster", SEED_CLUSTER, WORKLOAD)
    st = cluster["status"]
    assert (cluster["spec"]["instances"], st.get("readyInstances"), st.get("phase")) == (3, 3, HEALTHY), st
    instances = sorted(st["instanceNames"])
    primary = st["currentPrimary"]
    assert len(instances) == 3, st
    assert primary in instances, st

    # Each service cluster and workload cluster has one real node, and the pods ran there.
    for client, node in ((service, SERVICE), (workload, WORKLOAD)):
        nodes, _ = client.list("v1", "Node")
        assert [n["metadata"]["name"] for n in nodes] == [node], nodes
        assert _node_ready(nodes[0]), f"node {node} is not Ready: {nodes[0]['status'].get('conditions')}"
    for name in instances:
        pod = service.get("v1", "Pod", name, WORKLOAD)
        assert pod["status"]["phase"] == "Running", (name, pod["status"])
        assert pod["spec"]["nodeName"] == SERVICE, (name, pod["spec"].get("nodeName"))
        assert all(c["ready"] for c in pod["status"]["containerStatuses"]), (name, pod["status"])

    # The primary streams to both replicas (asked inside its pod: the app's role may not see it).
    sql = "select application_name from pg_stat_replication where state = 'streaming' order by 1"

    def replicas_streaming() -> list[str]:
        done = kubectl(
            seed, SERVICE, "-n", WORKLOAD, "exec", primary, "-c", "postgres", "--", "psql", "-tAc", sql
        )
        streaming = done.stdout.split()
        if done.returncode == 0 and streaming == [n for n in instances if n != primary]:
            return streaming
        raise AssertionError(f"{streaming} {done.stderr.strip()}")  # shown as the last on timeout

    streaming = eventually(replicas_streaming, f"2 streaming replicas on {primary}", 60, max_pause=1.0)
    print(f"primary {primary} streams to {', '.join(streaming)}")

    pods, _ = workload.list("v1", "Pod", "todo", "job-name=todo-table")
    succeeded = [p for p in pods if p["status"].get("phase") == "Succeeded"]
    assert succeeded, f"no Succeeded pod of the todo-table Job: {[p['status'].get('phase') for p in pods]}"
    assert {p["spec"]["nodeName"] for p in succeeded} == {WORKLOAD}, [p["spec"]["nodeName"] for p in pods]
    job = workload.get("batch/v1", "Job", "todo-table", "todo")
    assert job["status"].get("succeeded") == 1, job["status"]


def _transitions(
    seed: Seed, client: KubeClient, namespace: str, since: str, done: Any, timeout: float, awaiting: str
) -> list[tuple[float, str, str, str]]:
    """The (seconds, phase, Ready, reason) a namespace's Database went through after
    resourceVersion ``since`` (an informer watching from there replays every change: none is
    missed), until ``done(history)``."""
    started = time.monotonic()
    seen: list[tuple[float, str, str, str]] = []
    informer = Informer(
        client, crd.API_VERSION, crd.KIND, namespace=namespace, resource_version=since, watch_timeout=30
    )

    async def follow() -> None:
        async for event in informer.events():
            for obj in event.items if event.type == SYNCED else (event.object,):
                cond = condition(obj)
                state = (
                    (obj.get("status") or {}).get("phase", ""),
                    cond.get("status", ""),
                    cond.get("reason", ""),
                )
                if not seen or seen[-1][1:] != state:
                    seen.append((round(time.monotonic() - started, 1), *state))
                if done(seen):
                    return

    try:
        hub().run(asyncio.wait_for(follow(), timeout))
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout:.0f}s awaiting {awaiting}; saw {seen}\n{seed.tails()}"
        ) from None
    return seen


def _unavailable_then_ready(seen: list[tuple[float, str, str, str]]) -> bool:
    down = next((i for i, s in enumerate(seen) if s[2] == "False" and s[3] == "Unavailable"), None)
    return down is not None and any(s[2] == "True" for s in seen[down + 1 :])


def test_failover_promotes_a_replica_and_the_request_recovers(seed: Seed, seed_namespace: str) -> None:
    service, workload = seed.client(SERVICE), seed.client(WORKLOAD)
    ref = RequestRef(WORKLOAD, seed_namespace, "orders")
    started = time.monotonic()
    ask(seed, ref, instances=2, deletionPolicy="Delete")
    obj = wait_ready(seed, ref)
    print(f"request with 2 instances Ready: {time.monotonic() - started:.1f} s")
    secret, creds = delivered(seed, ref)
    address = load_balancer_address(seed, ref)
    assert creds["host"] == address == obj["status"]["endpoint"]["host"], (creds["host"], address)
    assert psql(creds, "select 1").returncode == 0

    name = cnpg_name(ref)
    before = service.get(CNPG, "Cluster", name, WORKLOAD)["status"]
    old = before["currentPrimary"]
    assert before.get("readyInstances") == 2, before
    since = workload.get(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)["metadata"]["resourceVersion"]

    killed = time.monotonic()
    assert service.delete("v1", "Pod", old, WORKLOAD), f"primary pod {old} was not there"
    promoted = watch(
        seed,
        service,
        (CNPG, "Cluster", name, WORKLOAD),
        lambda o: ((o or {}).get("status") or {}).get("currentPrimary") not in (None, "", old),
        120,
        f"CloudNativePG to promote an instance other than {old}",
    )
    new = (promoted or {})["status"]["currentPrimary"]
    print(f"primary {old} deleted -> {new} promoted: {time.monotonic() - killed:.1f} s")

    answer = psql_within(
        creds,
        "select pg_is_in_recovery()::text || ' ' || host(inet_server_addr())",
        120,
        f"the delivered credentials to open the new primary through {address}",
    )
    pod_ip = service.get("v1", "Pod", new, WORKLOAD)["status"]["podIP"]
    assert answer == f"false {pod_ip}", f"{address} did not reach the new primary {new} ({pod_ip}): {answer}"
    took = time.monotonic() - killed
    print(f"primary {old} deleted -> the same password opens {new} through {address}: {took:.1f} s")

    seen = _transitions(
        seed,
        workload,
        seed_namespace,
        since,
        _unavailable_then_ready,
        300,
        f"Database {ref} to show Ready=False/Unavailable and then Ready again",
    )
    print(f"primary {old} deleted -> request {seen}")
    after = service.get(CNPG, "Cluster", name, WORKLOAD)["status"]
    assert (after["currentPrimary"], after.get("readyInstances"), after.get("phase")) == (new, 2, HEALTHY), (
        after
    )
    again, _ = delivered(seed, ref)
    assert again["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"], (
        "the delivered credentials were rewritten for an outage"
    )


def test_a_rotated_password_is_set_by_the_instance_manager_and_delivered(
    seed: Seed, seed_namespace: str
) -> None:
    service, workload = seed.client(SERVICE), seed.client(WORKLOAD)
    ref = RequestRef(WORKLOAD, seed_namespace, "rotated")
    ask(seed, ref, deletionPolicy="Delete")
    wait_ready(seed, ref)
    _, old = delivered(seed, ref)
    assert old["host"] == load_balancer_address(seed, ref)
    assert psql(old, "select 1").returncode == 0

    # A rotation as fleetflow follows it: a new password in CloudNativePG's -app Secret (every
    # key that carries it), which CloudNativePG's instance manager sets on the role.
    app = f"{cnpg_name(ref)}-app"
    source = decoded(service.get("v1", "Secret", app, WORKLOAD))
    assert source["password"] == old["password"], "the request's Secret is not a copy of CNPG's -app Secret"
    new_password = "rotated-" + os.urandom(12).hex()
    data = {k: v.replace(old["password"], new_password) for k, v in source.items()}
    rotated = time.monotonic()
    service.merge_patch("v1", "Secret", app, WORKLOAD, {"stringData": data})

    who = psql_within(
        old,
        "select current_user",
        90,
        f"the new password to open {ref} through {old['host']} (set by CloudNativePG's instance manager)",
        password=new_password,
    )
    assert who == old["username"], who
    took = time.monotonic() - rotated
    print(f"-app Secret rotated -> new password connects through the LoadBalancer: {took:.1f} s")
    refused = psql(old, "select 1")
    assert refused.returncode != 0, "the old password still opens the database after the rotation"
    assert "password authentication failed" in refused.stderr, refused.stderr

    watch(
        seed,
        workload,
        ("v1", "Secret", f"{ref.name}-credentials", ref.namespace),
        lambda o: decoded(o).get("password") == new_password,
        60,
        f"the rotated password in the Secret next to {ref} (within seconds, not at the 5-minute reconcile)",
    )
    print(f"-app Secret rotated -> delivered next to the request: {time.monotonic() - rotated:.1f} s")
    _, fresh = delivered(seed, ref)
    assert psql(fresh, "select 1").returncode == 0


def test_retain_keeps_the_rows_for_a_re_created_request(seed: Seed, seed_namespace: str) -> None:
    service, workload = seed.client(SERVICE), seed.client(WORKLOAD)
    ref = RequestRef(WORKLOAD, seed_namespace, "kept")
    ask(seed, ref, deletionPolicy="Retain")
    wait_ready(seed, ref)
    first, creds = delivered(seed, ref)
    wrote = psql(creds, "create table notes (t text); insert into notes values ('before'), ('kept')")
    assert wrote.returncode == 0, wrote.stderr

    deleted = time.monotonic()
    workload.delete(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)
    watch(
        seed,
        workload,
        (crd.API_VERSION, crd.KIND, ref.name, ref.namespace),
        lambda o: o is None,
        90,
        f"Database {ref} to be finalised by fleetflow (deletionPolicy Retain)",
    )
    print(f"request deleted -> finalised: {time.monotonic() - deleted:.1f} s")
    assert workload.get_or_none("v1", "Secret", f"{ref.name}-credentials", ref.namespace) is None
    kept = service.get(CNPG, "Cluster", cnpg_name(ref), WORKLOAD)
    assert "fleetflow.io/orphaned" in (kept["metadata"].get("annotations") or {}), kept["metadata"]

    again = time.monotonic()
    ask(seed, ref, deletionPolicy="Retain")
    wait_ready(seed, ref)
    print(f"request re-created -> Ready on the retained Cluster: {time.monotonic() - again:.1f} s")
    second, fresh = delivered(seed, ref)
    assert second["metadata"]["uid"] != first["metadata"]["uid"], "the credentials were not delivered anew"
    rows = psql(fresh, "select t from notes order by t")
    assert rows.returncode == 0, rows.stderr
    assert rows.stdout.split() == ["before", "kept"], f"Retain lost the rows: {rows.stdout!r}"
    adopted = service.get(CNPG, "Cluster", cnpg_name(ref), WORKLOAD)
    assert "fleetflow.io/orphaned" not in (adopted["metadata"].get("annotations") or {}), adopted["metadata"]


def _runtime_pids(seed: Seed, cluster: str) -> dict[str, int]:
    """The node's kubelet and containerd, found by their configuration files."""
    node_dir = str(seed.home / "fleet" / "clusters" / cluster / "node") + "/"
    found: dict[str, int] = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(node_dir in arg for arg in cmdline) and cmdline:
            base = os.path.basename(cmdline[0])
            if base in ("kubelet", "containerd"):
                found[base] = proc.pid
    return found


def test_a_node_runtime_restart_mid_provision_ends_ready_with_one_cluster(
    seed: Seed, seed_namespace: str
) -> None:
    service = seed.client(SERVICE)
    node_binaries = binaries.ensure(nodes=True)
    before = _runtime_pids(seed, SERVICE)
    assert set(before) == {"kubelet", "containerd"}, before
    ref = RequestRef(WORKLOAD, seed_namespace, "restarted")
    started = time.monotonic()
    ask(seed, ref, deletionPolicy="Delete")
    created = watch(
        seed,
        service,
        (CNPG, "Cluster", cnpg_name(ref), WORKLOAD),
        lambda o: o is not None,
        120,
        f"the CNPG Cluster of {ref} to be created",
    )
    assert not _healthy(created), (
        f"the Cluster was healthy before the restart: {(created or {}).get('status')}"
    )
    Fleet(seed.home).restart_node_runtime(SERVICE, node_binaries)
    after = _runtime_pids(seed, SERVICE)
    assert set(after) == {"kubelet", "containerd"}, f"after the restart: {after}"
    assert not set(after.values()) & set(before.values()), f"not restarted: {before} -> {after}"
    print(f"Cluster created -> kubelet and containerd restarted: {time.monotonic() - started:.1f} s")

    wait_ready(seed, ref)
    print(f"request applied -> Ready across the restart: {time.monotonic() - started:.1f} s")
    watch(seed, service, ("v1", "Node", SERVICE, None), _node_ready, 60, f"node {SERVICE} to be Ready")
    items, _ = service.list(CNPG, "Cluster", WORKLOAD)
    mine = [
        c["metadata"]["name"]
        for c in items
        if (c["metadata"].get("annotations") or {}).get("fleetflow.io/database-request") == str(ref)
    ]
    assert mine == [cnpg_name(ref)], f"CNPG Clusters for {ref}: {mine}"
    _, creds = delivered(seed, ref)
    assert psql(creds, "select 1").returncode == 0


def test_down_leaves_nothing_behind(seed: Seed) -> None:
    """Runs last: stops the seed's platform and fleet, and looks for what they could leave."""
    started = time.monotonic()
    stopped = seed.down()
    assert stopped.returncode == 0, f"fleetflow down --local: {stopped.stdout}{stopped.stderr}"
    print(f"fleetflow down --local: {time.monotonic() - started:.1f} s")
    assert seed.node_indexes, "the demo recorded no node in the fleet's state"

    assert processes_mentioning(str(seed.home)) == []
    after = HostSnapshot.take()
    ours = {f"ff-node{i}" for i in seed.node_indexes.values()}
    assert not ours & after.netns, f"network namespaces left: {sorted(ours & after.netns)}"
    assert after.netns <= seed.before.netns, (
        f"new network namespaces: {sorted(after.netns - seed.before.netns)}"
    )
    links = {f"ff{side}{i}" for i in seed.node_indexes.values() for side in "hn"}
    assert not links & after.links, f"links left: {sorted(links & after.links)}"
    assert after.links <= seed.before.links, f"new links: {sorted(after.links - seed.before.links)}"
    assert mounts_under(str(seed.home), "/run/fleetflow", "/var/lib/fleetflow") == []
    leftovers = [p for p in (Path("/run/fleetflow"), Path("/var/lib/fleetflow")) if p.exists()]
    assert leftovers == [], f"the nodes' socket and kubelet directories are left: {leftovers}"
    assert after.routes == seed.before.routes, f"routes to the fleet's ranges: {after.routes}"
    assert after.iptables == seed.before.iptables, "iptables -S differs from before the demo"
    assert after.iptables_nat == seed.before.iptables_nat, "iptables -t nat -S differs from before the demo"
    assert after.ip_forward == seed.before.ip_forward, "net.ipv4.ip_forward was not put back"
