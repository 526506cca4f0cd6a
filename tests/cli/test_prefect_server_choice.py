"""A flow run by the CLI uses the Prefect server named in ``PREFECT_API_URL``, even when that was
set after Prefect read its settings (``fleetflow up`` learns its server's address only once it
has started it), and never a temporary server of its own then."""

from __future__ import annotations

import pytest
from prefect.settings import get_current_settings

from fleetflow.cli import run


def test_an_api_url_named_after_prefect_loaded_its_settings_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    if get_current_settings().api.url:
        pytest.skip("this process already has a Prefect API URL in its settings")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    started: list[str] = []
    monkeypatch.setattr(run, "progress", started.append)  # a temporary server announces itself
    with run.prefect_server("register-cluster"):
        assert get_current_settings().api.url == "http://127.0.0.1:9/api"
    assert started == [], "a temporary Prefect server was started although PREFECT_API_URL names one"
