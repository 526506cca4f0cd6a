"""register-cluster: record a cluster, its labels and its kubeconfig in the management cluster.

Once registered, the cluster gets the Database CRD, so its teams can request databases as
objects. The order guarantees that a failed first registration leaves nothing behind: name, labels and
kubeconfig are checked and the cluster is probed before anything is written; a failure while
writing rolls back what this run created. An already registered cluster that cannot be reached
is recorded as not ready, with the reason, and the run fails with that reason.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from fleetflow.errors import APIError, FleetflowError
from fleetflow.registry import Probe
from fleetflow.tasks.databases import install_database_crd
from fleetflow.tasks.registry import (
    apply_registration,
    ensure_cluster_namespace,
    load_kubeconfig,
    probe_cluster,
    read_registration,
    record_probe,
    roll_back_registration,
    store_kubeconfig,
    validate_registration,
)


@flow(name="register-cluster", validate_parameters=True)
def register_cluster(
    name: str,
    context: str,
    kubeconfig: str | None = None,
    labels: dict[str, str] | None = None,
    mgmt_context: str | None = None,
    probe_retries: int = 3,
) -> dict[str, Any]:
    """Register (or re-register) cluster NAME, reached through kubeconfig CONTEXT.

    Args:
        name: the cluster's name in the registry (a DNS-1123 label); also its namespace.
        context: the kubeconfig context that reaches the cluster.
        kubeconfig: path of the kubeconfig file (default: KUBECONFIG, then the local fleet's).
        labels: the cluster's labels; None keeps the labels of an existing registration.
        mgmt_context: the management cluster's context (default: fleetflow's configuration).
        probe_retries: how often to retry an unreachable cluster, with exponential backoff.
    """
    logger = get_run_logger()
    wanted_labels = validate_registration(name, labels)
    config = load_kubeconfig(kubeconfig, context)
    existing = read_registration(name, mgmt_context)

    probed = probe_cluster.with_options(retries=probe_retries)(config, return_state=True)
    if probed.is_failed():
        # A failed state's ``data`` is a result record in Prefect 3, not the exception: ask for it.
        error = probed.result(raise_on_failure=False)
        reason = " ".join(str(error).split()) if isinstance(error, Exception) else "probe failed"
        if existing is not None:
            record_probe(name, Probe(ready=False, reason="Unreachable", message=reason), mgmt_context)
        message = f"cluster {name!r} cannot be reached through context {context!r}: {reason}"
        if isinstance(error, APIError):  # keep its class: a connection failure stays temporary
            raise type(error)(message, status=error.status, reason=error.reason)
        raise FleetflowError(message)
    result = probed.result()

    created_namespace = False
    try:
        created_namespace = ensure_cluster_namespace(name, mgmt_context)
        store_kubeconfig(name, config, None, mgmt_context)
        record = apply_registration(name, context, wanted_labels, mgmt_context)
        store_kubeconfig(name, config, record.uid, mgmt_context)
        record = record_probe(name, result, mgmt_context)
    except Exception:
        if existing is None:
            roll_back_registration(name, created_namespace, mgmt_context)
        raise
    # Teams of this cluster can now ask for databases as objects (idempotent; the request watcher
    # also installs it for a cluster registered by GitOps, without this flow).
    install_database_crd(name, mgmt_context)
    logger.info(
        "cluster %s registered: ready=%s version=%s labels=%s",
        name,
        record.ready,
        record.version,
        record.labels,
    )
    return {"name": record.name, "labels": record.labels, "ready": record.ready, "version": record.version}
