"""What fleetflow reads from `helm list -o json`, and when it considers a release unchanged."""

from __future__ import annotations

import pytest

from fleetflow.kube import helm

# One entry of `helm list --output json` as helm 3.19 prints it.
LISTED = {
    "name": "cnpg",
    "namespace": "cnpg-system",
    "revision": "2",
    "updated": "2025-01-01 10:00:00.000000000 +0000 UTC",
    "status": "deployed",
    "chart": "cloudnative-pg-0.22.1",
    "app_version": "1.24.1",
}


def test_a_listed_release_reads_as_chart_name_and_version() -> None:
    release = helm._release(LISTED, changed=False)
    assert release == helm.Release(
        name="cnpg",
        namespace="cnpg-system",
        chart="cloudnative-pg",
        version="0.22.1",
        app_version="1.24.1",
        status="deployed",
        revision=2,
        changed=False,
    )


@pytest.mark.parametrize(
    ("chart", "name", "version"),
    [
        ("cloudnative-pg-0.22.1", "cloudnative-pg", "0.22.1"),
        ("cloudnative-pg-local-0.0.1-local", "cloudnative-pg-local", "0.0.1-local"),
        ("my-chart-v1.2.3", "my-chart", "v1.2.3"),
        ("postgres-13-1.0.0", "postgres-13", "1.0.0"),
        ("chart-1.0.0-rc.1+build.5", "chart", "1.0.0-rc.1+build.5"),
        ("no-version", "no-version", ""),
    ],
)
def test_the_chart_column_splits_at_the_semantic_version(chart: str, name: str, version: str) -> None:
    release = helm._release({**LISTED, "chart": chart}, changed=True)
    assert (release.chart, release.version) == (name, version)


def test_missing_optional_fields_read_as_empty() -> None:
    release = helm._release({"name": "cnpg", "namespace": "cnpg-system"}, changed=True)
    assert (release.chart, release.version, release.status, release.revision) == ("", "", "", 0)


def test_values_in_any_key_order_are_the_same_values() -> None:
    first = helm.values_digest({"a": 1, "nested": {"x": [1, 2], "y": "z"}})
    again = helm.values_digest({"nested": {"y": "z", "x": [1, 2]}, "a": 1})
    assert first == again
    assert helm.values_digest({"a": 2, "nested": {"x": [1, 2], "y": "z"}}) != first
    assert helm.values_digest({"nested": {"x": [2, 1], "y": "z"}, "a": 1}) != first, "list order matters"


def test_a_chart_without_a_version_is_identified_as_latest() -> None:
    assert helm.chart_identity("cloudnative-pg", "0.22.1") == "cloudnative-pg@0.22.1"
    assert helm.chart_identity("oci://example/cnpg", None) == "oci://example/cnpg@latest"
    assert helm.chart_identity("/charts/cnpg", "") == "/charts/cnpg@latest"
