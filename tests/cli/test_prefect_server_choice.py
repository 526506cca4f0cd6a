"""A flow run by the CLI uses the Prefect server named in ``PREFECT_API_URL``, even when that was
set after Prefect read its settings (``fleetflow up`` learns its server's address only once it
has started it), and never a temporary server of its own then."""

from __future__ import annotations

import pytest
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from fleetflow.cli import run


def test_an_api_url_named_after_prefect_loaded_its_settings_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    monkeypatch.setattr(run, "progress", started.append)  # a temporary server announces itself
    # Settings loaded without an API URL (as before `fleetflow up` knows its server's), then the
    # URL named in the environment.
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert not get_current_settings().api.url
        monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
        with run.prefect_server("register-cluster"):
            assert get_current_settings().api.url == "http://127.0.0.1:9/api"
    assert started == [], "a temporary Prefect server was started although PREFECT_API_URL names one"
