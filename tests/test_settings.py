"""The one settings object: SPEC defaults, env and file overrides, clear errors, secrets kept secret."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import MONITORED_SYMBOLS, SUPPORTED_SYMBOLS, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MLCRYPTO_* variable of the caller's shell leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("MLCRYPTO_"):
            monkeypatch.delenv(name)


def test_settings_when_defaults_then_equal_spec_numbers() -> None:
    s = load_settings()

    # 1. Data
    assert len(MONITORED_SYMBOLS) == 24 and s.data.symbols == MONITORED_SYMBOLS
    assert len(SUPPORTED_SYMBOLS) == 99 == len(set(SUPPORTED_SYMBOLS)) and s.data.universe == SUPPORTED_SYMBOLS
    assert (s.data.detection_timeframe, s.data.stream_timeframe) == ("1h", "1m")
    assert s.data.derived_timeframes == ("15m", "1h", "4h", "1d")
    assert s.store.backend == "duckdb"
    # 2. Detection
    st = s.strategy
    assert (st.rsi_period, st.volume_avg_bars) == (14, 20)
    d = st.dca
    assert (d.lookback, d.min_drop, d.rsi_max, d.grid_levels, d.grid_spacing, d.grid_expiry) == (
        timedelta(hours=4), 0.05, 30.0, 5, 0.01, timedelta(hours=24))
    assert (d.take_profit, d.stop_loss, d.min_confidence) == (0.10, 0.08, 0.60)
    w = st.swing
    assert (w.resistance_bars, w.volume_surge, w.ema_period) == (20, 2.0, 50)
    assert (w.take_profit, w.stop_loss, w.trailing_stop, w.min_confidence) == (0.15, 0.05, 0.07, 0.65)
    c = st.channel
    assert (c.window_bars, c.min_touches_each, c.min_touches_total, c.touch_tolerance, c.touch_separation_bars) == (
        72, 2, 3, 0.005, 3)
    assert (c.min_width, c.max_width, c.entry_zone, c.target_zone, c.stop_below_support) == (0.03, 0.25, 0.30, 0.30, 0.01)
    assert (c.min_reward_risk, c.min_confidence) == (1.5, 0.30)
    assert "allow_short" not in type(c).model_fields  # spot, long only: see docs/strategies.md
    # 4. Manager, risk, execution
    r = s.risk
    assert (r.capital, r.allocation, r.max_positions, r.max_open_notional) == (
        1000.0, {"dca": 0.40, "swing": 0.30, "channel": 0.30}, 5, 0.50)
    assert (r.vol_scaler_min, r.vol_scaler_max) == (0.5, 1.5)
    g = r.regime
    assert (g.panic_btc_1h, g.panic_btc_4h, g.panic_breadth_share, g.panic_breadth_drop_4h) == (-0.03, -0.05, 0.70, -0.05)
    assert (g.caution_btc_24h, g.caution_vol_ratio, g.caution_vol_median_days) == (-0.05, 2.0, 30)
    assert (g.caution_size_factor, g.caution_threshold_add) == (0.5, 0.10)
    assert (g.euphoria_btc_24h, g.euphoria_breadth_share, g.euphoria_breadth_rise_24h) == (0.08, 0.70, 0.10)
    e = s.execution
    assert (e.mode, e.confirm_live, e.maker_fee, e.taker_fee) == ("paper", False, 0.0025, 0.0040)
    assert e.hummingbot_url == "http://localhost:8000" and e.hummingbot_connector == "kraken"
    assert s.schedule.scan_cron == "*/5 * * * *"


def test_settings_when_env_override_then_applied_and_nested(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLCRYPTO_RISK__MAX_POSITIONS", "3")
    monkeypatch.setenv("MLCRYPTO_DATA__SYMBOLS", "btc, eth SOL")
    monkeypatch.setenv("MLCRYPTO_DATA__VAR_DIR", str(tmp_path))

    s = load_settings()

    assert s.risk.max_positions == 3
    assert s.data.symbols == ("BTC", "ETH", "SOL")
    monkeypatch.setenv("MLCRYPTO_DATA__SYMBOLS", '["doge"]')  # a JSON array works too
    assert load_settings().data.symbols == ("DOGE",)
    assert s.duckdb_path == tmp_path / "store.duckdb"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("s.toml", '[risk]\nmax_positions = 4\ncapital = 2500.0\n[strategy.dca]\nmin_drop = 0.07\n'),
        ("s.yaml", "risk:\n  max_positions: 4\n  capital: 2500.0\nstrategy:\n  dca:\n    min_drop: 0.07\n"),
    ],
)
def test_settings_when_file_given_then_read_and_env_wins(monkeypatch, tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    monkeypatch.setenv("MLCRYPTO_SETTINGS_FILE", str(path))
    monkeypatch.setenv("MLCRYPTO_RISK__CAPITAL", "3000")

    s = load_settings()

    assert (s.risk.max_positions, s.risk.capital, s.strategy.dca.min_drop) == (4, 3000.0, 0.07)
    assert s.strategy.dca.rsi_max == 30.0  # untouched defaults stay


def test_settings_when_file_has_unknown_key_then_config_error_naming_it(monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[risk]\nmax_positons = 4\n")
    monkeypatch.setenv("MLCRYPTO_SETTINGS_FILE", str(path))

    with pytest.raises(ConfigError, match=r"risk\.max_positons: Extra inputs are not permitted"):
        load_settings()


def test_settings_when_file_missing_or_wrong_suffix_then_config_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLCRYPTO_SETTINGS_FILE", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()
    ini = tmp_path / "s.ini"
    ini.write_text("x=1")
    monkeypatch.setenv("MLCRYPTO_SETTINGS_FILE", str(ini))
    with pytest.raises(ConfigError, match=r"\.toml, \.yaml or \.yml"):
        load_settings()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLCRYPTO_RISK__MAX_POSITIONS": "0"}, r"risk\.max_positions: Input should be greater than or equal to 1 \(got '0'\)"),
        ({"MLCRYPTO_STRATEGY__DCA__MIN_CONFIDENCE": "1.5"}, r"strategy\.dca\.min_confidence: Input should be less than or equal to 1"),
        ({"MLCRYPTO_EXECUTION__TAKER_FEE": "lots"}, r"execution\.taker_fee: Input should be a valid number"),
        ({"MLCRYPTO_DATA__SYMBOLS": "BTC,NOTACOIN"}, r"NOTACOIN.*not in the supported universe"),
        ({"MLCRYPTO_RISK__ALLOCATION": "{bad json"}, r"field \"risk\".*nested values in env take JSON"),
    ],
)
def test_settings_when_bad_value_then_config_error_names_field_and_range(monkeypatch, env, message) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_settings_when_live_without_confirm_then_error_saying_how(monkeypatch) -> None:
    monkeypatch.setenv("MLCRYPTO_EXECUTION__MODE", "live")

    with pytest.raises(ConfigError, match="confirm_live=true"):
        load_settings()
    monkeypatch.setenv("MLCRYPTO_EXECUTION__CONFIRM_LIVE", "true")
    assert load_settings().execution.mode == "live"


def test_settings_when_secrets_set_then_absent_from_repr_str_errors_and_fingerprint(monkeypatch) -> None:
    secrets = {
        "MLCRYPTO_FEED__POLYGON_API_KEY": "pk-SECRET-111",
        "MLCRYPTO_EXECUTION__HUMMINGBOT_PASSWORD": "hb-SECRET-222",
        "MLCRYPTO_ALERTS__SLACK_WEBHOOK_URL": "https://hooks.slack.com/SECRET-333",
        "MLCRYPTO_STORE__POSTGRES_DSN": "postgresql://u:pg-SECRET-444@db/x",
    }
    for k, v in secrets.items():
        monkeypatch.setenv(k, v.replace("SECRET", "OTHER"))
    baseline = load_settings().fingerprint()  # same keys set, other values
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)

    s = load_settings()

    shown = repr(s) + str(s) + s.model_dump_json()
    assert all(v not in shown for v in secrets.values())
    assert s.feed.polygon_api_key.get_secret_value() == "pk-SECRET-111"
    assert s.fingerprint() == baseline  # secret values do not feed the hash
    assert load_settings(risk={"max_positions": 4}).fingerprint() != baseline
    # A rejected secret value is not echoed in the error either.
    with pytest.raises(ConfigError, match=r"feed\.polygon_api_key: .*\(got <redacted>\)") as err:
        load_settings(feed={"polygon_api_key": 987654321})
    assert "987654321" not in str(err.value)


@pytest.mark.parametrize("removed", [{"strategy": {"channel": {"allow_short": True}}}, {"risk": {"vol_window_bars": 48}}])
def test_settings_when_removed_setting_given_then_config_error_instead_of_silently_ignored(removed) -> None:
    # allow_short: spot venues cannot short; vol_window_bars: the scaler uses the rvol_24h feature.
    with pytest.raises(ConfigError, match="allow_short|vol_window_bars"):
        load_settings(**removed)
