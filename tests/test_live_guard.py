"""The live-mode guard: paper by default; real orders only with mode=live AND confirm_live=true."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import ExecutionSettings, Settings, load_settings
from core.storage.duckdb_store import DuckDBStore
from core.venues.factory import build_live_venue, build_venue
from tests.hummingbot_server import HummingbotTestServer, settings_for


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    s = DuckDBStore(tmp_path / "guard.duckdb")
    yield s
    s.close()


@pytest.fixture
def hb() -> Iterator[HummingbotTestServer]:
    with HummingbotTestServer() as server:
        yield server


def unvalidated_live(settings: Settings, confirm: bool) -> Settings:
    """Settings that skipped validation (model_construct/model_copy), as buggy calling code could build."""
    ex = ExecutionSettings.model_construct(**{**settings.execution.__dict__, "mode": "live", "confirm_live": confirm})
    return settings.model_copy(update={"execution": ex})


def test_settings_when_nothing_set_then_paper_mode_unconfirmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLCRYPTO_EXECUTION__MODE", raising=False)
    monkeypatch.delenv("MLCRYPTO_EXECUTION__CONFIRM_LIVE", raising=False)
    ex = load_settings().execution
    assert (ex.mode, ex.confirm_live) == ("paper", False)


def test_build_venue_when_default_settings_then_paper_venue(store: DuckDBStore) -> None:
    venue = build_venue(load_settings(), store)
    assert type(venue).__name__ == "PaperVenue"
    assert venue.name != "hummingbot"


def test_settings_when_live_without_confirmation_then_refused_with_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCRYPTO_EXECUTION__MODE", "live")
    with pytest.raises(ConfigError, match="confirm_live=true") as err:
        load_settings()
    assert "MLCRYPTO_EXECUTION__CONFIRM_LIVE" in str(err.value)


def test_build_venue_when_live_settings_bypassed_validation_then_refused_and_nothing_sent(
    hb: HummingbotTestServer, store: DuckDBStore
) -> None:
    settings = unvalidated_live(settings_for(hb), confirm=False)
    with pytest.raises(ConfigError, match="live trading refused.*confirm_live=False"):
        build_venue(settings, store)
    with pytest.raises(ConfigError, match="live trading refused"):
        build_live_venue(settings, store)
    assert hb.state.requests == []


def test_build_live_venue_when_paper_mode_then_refused(store: DuckDBStore) -> None:
    with pytest.raises(ConfigError, match="mode='paper'"):
        build_live_venue(load_settings(), store)


def test_build_venue_when_live_and_confirmed_then_hummingbot_venue_that_places_nothing_on_start(
    hb: HummingbotTestServer, store: DuckDBStore
) -> None:
    settings = settings_for(hb, mode="live", confirm_live=True)
    venue = build_venue(settings, store)
    assert venue.name == "hummingbot"
    assert venue.balances()["USD"] == 10_000.0  # it talks to the configured server
    assert [p for _, p in hb.state.requests] == ["/portfolio/state"]
