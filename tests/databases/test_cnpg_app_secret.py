"""Which of a CNPG Cluster's secrets is its application user's: the one a rotation is read from.

CloudNativePG 1.24 (the seed's operator) labels it ``cnpg.io/cluster`` and ``cnpg.io/reload``
only; later versions add ``cnpg.io/userType=app``. A rotation on 1.24 must still be noticed.
"""

from __future__ import annotations

from typing import Any

import pytest

from fleetflow.databases.watcher import app_secret


def _secret(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def test_cnpg_1_24s_app_secret_is_known_by_its_name() -> None:
    assert app_secret(_secret("shop-app", **{"cnpg.io/cluster": "shop", "cnpg.io/reload": "true"}))


@pytest.mark.parametrize(
    "secret",
    [
        _secret("shop-superuser", **{"cnpg.io/cluster": "shop"}),
        _secret("shop-ca", **{"cnpg.io/cluster": "shop"}),
        _secret("other-app", **{"cnpg.io/cluster": "shop"}),
        _secret("shop-app"),
        _secret("shop-app", **{"cnpg.io/cluster": "shop", "cnpg.io/userType": "superuser"}),
    ],
)
def test_other_secrets_of_the_cluster_are_not(secret: dict[str, Any]) -> None:
    assert not app_secret(secret)


def test_a_later_operators_label_decides_whatever_the_name() -> None:
    labels = {"cnpg.io/cluster": "shop", "cnpg.io/userType": "app"}
    assert app_secret(_secret("custom-name", **labels))
