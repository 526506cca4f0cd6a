"""KubeClient.delete asks for background propagation: batch/v1 Jobs otherwise orphan their Pods.

What the garbage collector then does is shown against a real cluster by
tests/kube/test_kube_client_real.py.
"""

from __future__ import annotations

from tests.support.kube_fakes import Dynamic, kube


def test_delete_asks_for_background_propagation_so_a_jobs_pods_go_too() -> None:
    dynamic = Dynamic()
    assert kube(dynamic).delete("batch/v1", "Job", "j", "ns")
    [(method, kwargs)] = dynamic.res.calls
    assert method == "delete"
    assert kwargs["propagation_policy"] == "Background"


def test_delete_takes_another_propagation_when_told() -> None:
    dynamic = Dynamic()
    kube(dynamic).delete("batch/v1", "Job", "j", "ns", propagation="Foreground")
    assert dynamic.res.calls[0][1]["propagation_policy"] == "Foreground"
