"""Settings that refuse what they cannot mean, and secrets never printed on any path (library and
every CLI command, run as a real subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.redact import dsn_secrets, known_secrets, redact
from core.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
PW = "Hb0tPassw0rd-Zq9"
API_KEY = "PolyK3y-Xw7Secret"
WEBHOOK = "https://hooks.slack.test/T000/B000/Wh00kS3cret"
DSN_PW = "Pg-Pw0rd!Secret"
SECRETS = (PW, API_KEY, WEBHOOK, DSN_PW, "Wh00kS3cret")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MLCRYPTO_"):
            monkeypatch.delenv(name)


# --- settings refuse what they cannot mean ------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLCRYPTO_RISK__ALLOCATION": '{"dca": NaN, "swing": 0.5, "channel": 0.5}'}, "risk.allocation.dca"),
        ({"MLCRYPTO_RISK__CAPITAL": "inf"}, "risk.capital: Input should be a finite number"),
        ({"MLCRYPTO_RISK__CAPITAL": "nan"}, "risk.capital"),
        ({"MLCRYPTO_EXECUTION__SLIPPAGE": "NaN"}, "execution.slippage"),
        ({"MLCRYPTO_DATA__MAX_PRICE": "Infinity"}, "data.max_price"),
        ({"MLCRYPTO_STRATEGY__DCA__LOOKBACK": "-PT4H"}, "durations must be positive: lookback"),
        ({"MLCRYPTO_STRATEGY__SWING__MAX_HOLD": "PT0S"}, "durations must be positive: max_hold"),
        ({"MLCRYPTO_ML__EMBARGO": "-P1D"}, "durations must be positive: embargo"),
    ],
)
def test_load_settings_when_nan_inf_or_non_positive_duration_then_config_error(monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_settings()


def test_load_settings_when_nan_share_given_as_keyword_then_refused():
    with pytest.raises(ConfigError, match="finite"):
        load_settings(risk={"allocation": {"dca": float("nan"), "swing": 0.5, "channel": 0.5}})


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("MLCRYPTO_EXECUTON__MODE", "MLCRYPTO_EXECUTION__MODE"), ("MLCRYPTO_RISK__CAPITOL", "MLCRYPTO_RISK__CAPITAL"),
     ("MLCRYPTO_STRATEGY__DCA__LOOKBAK", "MLCRYPTO_STRATEGY__DCA__LOOKBACK")],
)
def test_load_settings_when_env_names_no_field_then_refused_with_closest_name(monkeypatch, name, suggestion):
    monkeypatch.setenv(name, "live")
    with pytest.raises(ConfigError, match=f"{name}: no such setting; did you mean {suggestion}"):
        load_settings()


def test_load_settings_when_env_names_dict_key_or_known_variable_then_accepted(monkeypatch):
    monkeypatch.setenv("MLCRYPTO_SETTINGS_FILE_UNUSED_BUT_NOT", "x")
    with pytest.raises(ConfigError, match="no such setting"):
        load_settings()
    monkeypatch.delenv("MLCRYPTO_SETTINGS_FILE_UNUSED_BUT_NOT")
    monkeypatch.setenv("MLCRYPTO_REQUIRE_POSTGRES", "1")
    monkeypatch.setenv("MLCRYPTO_RISK__MAX_POSITIONS", "3")
    assert load_settings().risk.max_positions == 3


@pytest.mark.parametrize("value", ["yes", "1", "on", "y", "t", "tru", "2", "0", "off", "no"])
def test_load_settings_when_confirm_live_not_true_or_false_then_refused(monkeypatch, value):
    monkeypatch.setenv("MLCRYPTO_EXECUTION__CONFIRM_LIVE", value)
    with pytest.raises(ConfigError, match="confirm_live takes only true or false"):
        load_settings()


@pytest.mark.parametrize("value", ["true", "TRUE", "True", "false", "FALSE"])
def test_load_settings_when_confirm_live_true_or_false_any_case_then_accepted(monkeypatch, value):
    monkeypatch.setenv("MLCRYPTO_EXECUTION__CONFIRM_LIVE", value)
    assert load_settings().execution.confirm_live is (value.lower() == "true")


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("bad.toml", f'[execution]\nhummingbot_password = "{PW}"\nmode = \n', "line 3"),
        ("bad.yaml", f'execution:\n  hummingbot_password: "{PW}\n  mode: [live\n', "line 4"),
        ("bad.yml", "data:\n  symbols: [BTC\n  quote: USD\n", "line 3"),
    ],
)
def test_load_settings_when_file_malformed_then_config_error_naming_file_and_line(monkeypatch, tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    monkeypatch.setenv("MLCRYPTO_SETTINGS_FILE", str(path))
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(path) in str(err.value) and where in str(err.value)
    assert PW not in str(err.value)


# --- secrets redacted by value --------------------------------------------------------------------------


def test_load_settings_when_section_error_then_no_secret_in_message(monkeypatch):
    # The live guard is a section-level error: pydantic hands over the whole section, password included.
    monkeypatch.setenv("MLCRYPTO_EXECUTION", f'{{"mode": "live", "hummingbot_password": "{PW}"}}')
    with pytest.raises(ConfigError, match="confirm_live") as err:
        load_settings()
    assert PW not in str(err.value)
    with pytest.raises(ConfigError) as err2:
        load_settings(execution={"mode": "live", "hummingbot_password": PW, "hummingbot_url": PW})
    assert PW not in str(err2.value)  # by value: even where a secret sits in a non-secret field


@pytest.mark.parametrize(
    "dsn",
    [f"postgresql+psycopg://u:{DSN_PW}@127.0.0.1:1/db", f"postgresql://u:{DSN_PW}@127.0.0.1:1/db",
     f"host=127.0.0.1 port=1 user=u password={DSN_PW}", f"postgresql://u:{DSN_PW.replace('!', '%21')}@h/db"],
)
def test_redact_when_dsn_in_any_form_then_password_hidden(dsn):
    text = f"cannot connect to {dsn}: invalid dsn {dsn!r}"
    assert DSN_PW not in redact(text, dsn_secrets(dsn)) and DSN_PW.replace("!", "%21") not in redact(text, dsn_secrets(dsn))


def test_postgres_store_when_sqlalchemy_dsn_then_store_error_without_password():
    from core.errors import StoreError
    from core.storage.postgres_store import PostgresStore

    with pytest.raises(StoreError) as err:
        PostgresStore(f"postgresql+psycopg://u:{DSN_PW}@127.0.0.1:5432/db")
    assert DSN_PW not in str(err.value) and "postgresql+psycopg://u:***@" in str(err.value)


def test_known_secrets_when_env_and_file_hold_secrets_then_all_found(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(f'[alerts]\nslack_webhook_url = "{WEBHOOK}"\n[broken\n')  # unparsable: found line by line
    env = {"MLCRYPTO_EXECUTION__HUMMINGBOT_PASSWORD": PW, "MLCRYPTO_FEED__POLYGON_API_KEY": API_KEY,
           "MLCRYPTO_SETTINGS_FILE": str(f), "MLCRYPTO_STORE__POSTGRES_DSN": f"postgresql://u:{DSN_PW}@h/db"}
    found = known_secrets(env)
    assert {PW, API_KEY, WEBHOOK, DSN_PW} <= found


# --- every CLI command's error paths, as a real subprocess ----------------------------------------------

COMMANDS: list[list[str]] = [
    ["init"], ["import", "--no-progress"], ["status"], ["backfill-binance", "--days", "1"], ["stream", "--seconds", "1"],
    ["replay-server", "--exit-when-done"], ["backfill-polygon", "--start", "2024-01-01", "--end", "2024-01-02"],
    ["health"], ["venue-status"], ["reconcile"], ["train"], ["evaluate"], ["promote"], ["mlflow-ui"], ["up"],
    ["serve"], ["deploy-check"], ["signals"], ["regime"], ["backtest"], ["paper"], ["run"],
]
# Commands that open the store right after the settings (the DSN error path).
STORE_COMMANDS = [["init"], ["import", "--no-progress"], ["status"],
                  ["stream", "--seconds", "1"], ["backfill-polygon", "--start", "2024-01-01", "--end", "2024-01-02"]]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLCRYPTO_")}
    return subprocess.run([sys.executable, "-m", "deployments.cli", *args], cwd=ROOT, env=base | env,
                          capture_output=True, text=True, check=False, timeout=120)


def _secret_env(tmp_path: Path) -> dict[str, str]:
    return {
        "MLCRYPTO_DATA__VAR_DIR": str(tmp_path / "var"),
        "MLCRYPTO_EXECUTION__HUMMINGBOT_PASSWORD": PW,
        "MLCRYPTO_FEED__POLYGON_API_KEY": API_KEY,
        "MLCRYPTO_ALERTS__SLACK_WEBHOOK_URL": WEBHOOK,
        "MLCRYPTO_STORE__POSTGRES_DSN": f"postgresql+psycopg://u:{DSN_PW}@127.0.0.1:1/db",
    }


def _assert_clean(args: list[str], out: subprocess.CompletedProcess[str], code: int | None = None) -> None:
    text = out.stdout + out.stderr
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"`mlcrypto {' '.join(args)}` printed {leaked}:\n{text[-2000:]}"
    assert out.returncode != 0, f"`mlcrypto {' '.join(args)}` exited 0 on an error path:\n{text[-1000:]}"
    if code is not None:
        assert out.returncode == code, f"`mlcrypto {' '.join(args)}` exit {out.returncode}:\n{text[-1000:]}"


def test_cli_when_section_error_with_secrets_then_no_command_prints_a_secret(tmp_path):
    # Arrange: live mode without confirmation -> the execution section's error, which carries its input.
    env = _secret_env(tmp_path) | {"MLCRYPTO_EXECUTION__MODE": "live", "MLCRYPTO_STORE__BACKEND": "postgres"}
    # Act
    with ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(lambda a: (a, _cli(a, env)), COMMANDS))
    # Assert
    for args, out in runs:
        _assert_clean(args, out, 2)
        assert "confirm_live" in out.stdout + out.stderr


def test_cli_when_settings_file_malformed_then_no_command_prints_a_secret_and_exit_2(tmp_path):
    bad = tmp_path / "settings.yaml"
    bad.write_text(f'execution:\n  hummingbot_password: "{PW}\n  mode: [live\n')
    env = _secret_env(tmp_path) | {"MLCRYPTO_SETTINGS_FILE": str(bad)}
    with ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(lambda a: (a, _cli(a, env)), COMMANDS))
    for args, out in runs:
        _assert_clean(args, out, 2)
        assert str(bad) in (out.stdout + out.stderr).replace("\n", "")


def test_cli_when_sqlalchemy_dsn_then_store_commands_fail_without_printing_it(tmp_path):
    env = _secret_env(tmp_path) | {"MLCRYPTO_STORE__BACKEND": "postgres"}
    with ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(lambda a: (a, _cli(a, env)), STORE_COMMANDS))
    for args, out in runs:
        _assert_clean(args, out)
        assert "***" in out.stdout + out.stderr
