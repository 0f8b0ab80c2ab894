"""The ONE settings object. Every default of SPEC lives here.

Sources, highest priority first: keyword arguments, environment (``MLCRYPTO_<SECTION>__<KEY>``,
e.g. ``MLCRYPTO_RISK__MAX_POSITIONS=3``), a settings file (TOML or YAML, path in
``MLCRYPTO_SETTINGS_FILE``), then the defaults below. Unknown keys are refused (an ``MLCRYPTO_*``
environment variable that names no setting too, with the closest valid name), and a bad value fails at
start-up with a message naming the field and the allowed range. Settings refuse what they cannot mean:
NaN and infinity in any float, durations <= 0, and anything but true/false for ``confirm_live``. A
settings file that does not parse gives a ConfigError naming the file and the line. Error messages
never print a secret: they are redacted by value (core/redact.py).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tomllib
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from core.errors import ConfigError
from core.redact import known_secrets, redact

PROJECT_ROOT = Path(__file__).resolve().parent.parent

MONITORED_SYMBOLS: tuple[str, ...] = tuple(
    "BTC ETH SOL BNB XRP ADA AVAX DOGE DOT LINK UNI ATOM NEAR ICP ARB OP AAVE CRV MKR INJ SEI PEPE WIF BONK".split()
)
# The 99 supported coins: the 24 monitored ones plus the 75 most liquid others of the shipped history
# (by mean hourly quote volume, 2024-01-01 .. 2024-07-14).
SUPPORTED_SYMBOLS: tuple[str, ...] = MONITORED_SYMBOLS + tuple(
    (
        "NOT SHIB BOME ENA IO WLD ORDI FLOKI ETHFI RUNE SUI ZRO FET MATIC ZK PEOPLE LTC BB FTM STRK BCH TIA "
        "1000SATS GALA APT ETC SAGA TRX TRB JTO STX JASMY ENS ARKM PENDLE LDO AR HBAR DYDX OM YGG GMT TAO "
        "LUNA BLUR CAKE MASK APE LEVER REI ASTR PHB RDNT EGLD AMP ACH XEC XVG COS SPELL 1INCH PERP STG KEY "
        "RLC RAD SANTOS FIDA BETA BURGER ACA CTXC QI RIF PHA"
    ).split()
)

Timeframe = Literal["1m", "5m", "15m", "1h", "4h", "1d"]


class _Section(BaseModel):
    # allow_inf_nan=False: NaN/inf in ANY float (dict values included) is refused, never silently used.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _durations_positive(self) -> _Section:
        bad = [n for n in type(self).model_fields if isinstance(v := getattr(self, n), timedelta) and v <= timedelta(0)]
        if bad:
            raise ValueError(f"durations must be positive: {', '.join(bad)}")
        return self


class DataSettings(_Section):
    data_dir: Path = Field(
        default=PROJECT_ROOT.parent / "shared" / "data",
        description="Folder of the shipped parquet candles (ohlcv_<timeframe>.parquet).",
    )
    var_dir: Path = Field(default=PROJECT_ROOT / "var", description="Where the store, MLflow and reports live.")
    # NoDecode: env values are split by _split ("BTC,ETH SOL" or a JSON array), not JSON-only.
    symbols: Annotated[tuple[str, ...], NoDecode] = Field(default=MONITORED_SYMBOLS, min_length=1, max_length=99)
    universe: Annotated[tuple[str, ...], NoDecode] = Field(default=SUPPORTED_SYMBOLS, min_length=1, max_length=99)
    quote: str = Field(default="USD", description="Quote currency of the venue's pairs (Kraken trades USD).")
    detection_timeframe: Timeframe = "1h"
    stream_timeframe: Timeframe = "1m"
    derived_timeframes: tuple[Timeframe, ...] = ("15m", "1h", "4h", "1d")
    gap_tolerance_bars: int = Field(default=1, ge=0, le=1000, description="Missing bars tolerated by the gate.")
    freshness_bars: int = Field(default=3, ge=1, le=1000, description="Max age of the last bar, in bars.")
    max_abs_return: float = Field(default=0.5, gt=0, le=10, description="Gate bound on |bar return|.")
    # Plausibility bounds every entry (stream, REST, import, store upsert) applies: see core/plausibility.py.
    earliest_bar: AwareDatetime = Field(
        default=datetime(2009, 1, 3, tzinfo=UTC), description="Bars opening before this are refused."
    )
    min_price: float = Field(default=1e-12, gt=0, description="Prices below this are refused as implausible.")
    max_price: float = Field(default=1e9, gt=0, description="Prices above this are refused as implausible.")
    max_volume: float = Field(default=1e18, gt=0, description="Volumes above this are refused as implausible.")

    @field_validator("symbols", "universe", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = json.loads(v) if v.lstrip().startswith("[") else [s for s in v.replace(",", " ").split() if s]
        return tuple(str(s).upper() for s in v)

    @model_validator(mode="after")
    def _symbols_supported(self) -> DataSettings:
        unknown = [s for s in self.symbols if s not in self.universe]
        if unknown:
            raise ValueError(f"symbols {unknown} are not in the supported universe; add them to data.universe")
        return self


class StoreSettings(_Section):
    backend: Literal["duckdb", "postgres"] = "duckdb"
    duckdb_path: Path | None = Field(default=None, description="Defaults to <var_dir>/store.duckdb.")
    postgres_dsn: SecretStr | None = Field(
        default=None, description="postgresql://user:pass@host:5432/db (Supabase: its Postgres connection string)."
    )
    batch_rows: int = Field(default=100_000, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _dsn_when_postgres(self) -> StoreSettings:
        if self.backend == "postgres" and self.postgres_dsn is None:
            raise ValueError("store.backend=postgres needs store.postgres_dsn (MLCRYPTO_STORE__POSTGRES_DSN)")
        return self


class DcaSettings(_Section):
    lookback: timedelta = timedelta(hours=4)
    ema_period: int = Field(
        default=50, ge=2, le=1000, description="EMA of the dist_ema model feature (trend context, not a rule)."
    )
    min_drop: float = Field(default=0.05, gt=0, lt=1)
    rsi_max: float = Field(default=30.0, gt=0, lt=100)
    grid_levels: int = Field(default=5, ge=1, le=20)
    grid_spacing: float = Field(default=0.01, gt=0, lt=0.5)
    grid_expiry: timedelta = timedelta(hours=24)
    take_profit: float = Field(default=0.10, gt=0, le=1)
    stop_loss: float = Field(default=0.08, gt=0, lt=1)
    max_hold: timedelta = timedelta(hours=72)
    min_confidence: float = Field(default=0.60, ge=0, le=1)


class SwingSettings(_Section):
    resistance_bars: int = Field(default=20, ge=2, le=1000)
    volume_surge: float = Field(default=2.0, gt=0)
    ema_period: int = Field(default=50, ge=2, le=1000)
    take_profit: float = Field(default=0.15, gt=0, le=1)
    stop_loss: float = Field(default=0.05, gt=0, lt=1)
    trailing_stop: float = Field(default=0.07, gt=0, lt=1)
    max_hold: timedelta = timedelta(hours=72)
    min_confidence: float = Field(default=0.65, ge=0, le=1)


class ChannelSettings(_Section):
    window_bars: int = Field(default=72, ge=10, le=5000)
    touch_tolerance: float = Field(default=0.005, gt=0, lt=0.5, description="Fraction of range width.")
    min_touches_each: int = Field(default=2, ge=1)
    min_touches_total: int = Field(default=3, ge=2)
    touch_separation_bars: int = Field(default=3, ge=1)
    min_width: float = Field(default=0.03, gt=0, lt=1)
    max_width: float = Field(default=0.25, gt=0, lt=5)
    entry_zone: float = Field(default=0.30, gt=0, lt=1, description="Bottom fraction of the range to buy in.")
    target_zone: float = Field(default=0.30, gt=0, lt=1, description="Top fraction of the range targeted.")
    stop_below_support: float = Field(default=0.01, gt=0, lt=0.5)
    min_reward_risk: float = Field(default=1.5, gt=0)
    max_hold: timedelta = timedelta(hours=72)
    min_confidence: float = Field(default=0.30, ge=0, le=1)
    # No allow_short: SPEC trades spot, long only, and the venues (paper spot book, Kraken spot through
    # Hummingbot) cannot open a short, so a setting for it could not be obeyed (docs/strategies.md).

    @model_validator(mode="after")
    def _width_order(self) -> ChannelSettings:
        if self.min_width >= self.max_width:
            raise ValueError("channel.min_width must be below channel.max_width")
        return self


class StrategySettings(_Section):
    rsi_period: int = Field(default=14, ge=2, le=500)
    volume_avg_bars: int = Field(default=20, ge=2, le=1000)
    atr_period: int = Field(default=14, ge=2, le=500)
    max_bridged_gap: timedelta = Field(
        default=timedelta(hours=24), description="Longer holes restart every detection window (no lookback spans one)."
    )
    dca: DcaSettings = DcaSettings()
    swing: SwingSettings = SwingSettings()
    channel: ChannelSettings = ChannelSettings()


class RegimeSettings(_Section):
    panic_btc_1h: float = -0.03
    panic_btc_4h: float = -0.05
    panic_breadth_share: float = Field(default=0.70, gt=0, le=1)
    panic_breadth_drop_4h: float = -0.05
    caution_btc_24h: float = -0.05
    caution_vol_ratio: float = Field(default=2.0, gt=0)
    caution_vol_median_days: int = Field(default=30, ge=1)
    caution_size_factor: float = Field(default=0.5, gt=0, le=1)
    caution_threshold_add: float = Field(default=0.10, ge=0, le=1)
    euphoria_btc_24h: float = 0.08
    euphoria_breadth_share: float = Field(default=0.70, gt=0, le=1)
    euphoria_breadth_rise_24h: float = 0.10


class RiskSettings(_Section):
    capital: float = Field(default=1000.0, gt=0)
    allocation: dict[str, float] = Field(default_factory=lambda: {"dca": 0.40, "swing": 0.30, "channel": 0.30})
    max_positions: int = Field(default=5, ge=1, le=100)
    max_open_notional: float = Field(default=0.50, gt=0, le=1, description="Share of equity.")
    target_volatility: float = Field(default=0.60, gt=0, description="Annualised target vol for sizing.")
    vol_scaler_min: float = Field(default=0.5, gt=0)
    vol_scaler_max: float = Field(default=1.5, gt=0)
    # Realised vol for the scaler is the signal's rvol_24h feature (24 h of bars, core.strategies.base).
    min_order_notional: float = Field(default=5.0, ge=0)
    positions_per_strategy: int = Field(
        default=2, ge=1, le=100, description="Budget share = allocation x equity / this (sizing)."
    )
    regime: RegimeSettings = RegimeSettings()

    @field_validator("allocation")
    @classmethod
    def _allocation(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) != {"dca", "swing", "channel"}:
            raise ValueError("risk.allocation needs exactly the keys dca, swing, channel")
        if any(x < 0 for x in v.values()) or abs(sum(v.values()) - 1.0) > 1e-9:
            raise ValueError(f"risk.allocation shares must be >= 0 and sum to 1, got {v}")
        return v

    @model_validator(mode="after")
    def _scaler_order(self) -> RiskSettings:
        if self.vol_scaler_min > self.vol_scaler_max:
            raise ValueError("risk.vol_scaler_min must be <= risk.vol_scaler_max")
        return self


class PaperTradingRule(_Section):
    """One symbol's venue rules for the paper venue (the names of GET /connectors/{c}/trading-rules)."""

    min_order_size: float = Field(default=0.0, ge=0)
    min_price_increment: float = Field(gt=0)
    min_base_amount_increment: float = Field(gt=0)
    min_notional_size: float = Field(default=0.0, ge=0)


class ExecutionSettings(_Section):
    mode: Literal["paper", "live"] = "paper"
    confirm_live: bool = Field(default=False, description="Must be true, together with mode=live, to trade real money.")
    maker_fee: float = Field(default=0.0025, ge=0, lt=0.1)
    taker_fee: float = Field(default=0.0040, ge=0, lt=0.1)
    slippage: float = Field(default=0.0005, ge=0, lt=0.1, description="Market-order slippage, fraction of price.")
    hummingbot_url: str = "http://localhost:8000"
    hummingbot_username: str = "admin"
    hummingbot_password: SecretStr = SecretStr("admin")
    hummingbot_account: str = "master_account"
    hummingbot_connector: str = "kraken"
    hummingbot_quote: str = "USD"
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    max_retries: int = Field(default=3, ge=0, le=20)
    backoff_seconds: float = Field(default=0.5, ge=0, le=60)
    # --- venue trading rules and order safety (issue 10; used by core/venues) ---
    trading_rules_ttl_seconds: float = Field(default=3600.0, gt=0, description="Cache of the live trading rules.")
    order_settle_seconds: float = Field(
        default=30.0, ge=0, description="Reconciliation declares an unconfirmed intent absent only after this long."
    )
    paper_trading_rules: dict[str, PaperTradingRule] = Field(
        default_factory=dict,
        description="Symbol -> lot/tick/minimums the paper venue applies (as live reads them from the venue).",
    )

    @field_validator("hummingbot_connector")
    @classmethod
    def _no_paper_connector(cls, v: str) -> str:
        if v.endswith("_paper_trade"):
            raise ValueError(
                f"hummingbot_connector={v!r}: hummingbot-api has no paper-trade connectors (it answers 500); "
                "paper trading is the project's own PaperVenue: set execution.mode=paper and a real connector name"
            )
        return v

    @field_validator("confirm_live", mode="before")
    @classmethod
    def _strict_bool(cls, v: Any) -> bool:
        # It guards real money: only an explicit true/false, never yes/1/on.
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in {"true", "false"}:
            return v.strip().lower() == "true"
        raise ValueError("execution.confirm_live takes only true or false")

    @model_validator(mode="after")
    def _live_needs_confirmation(self) -> ExecutionSettings:
        if self.mode == "live" and not self.confirm_live:
            raise ValueError(
                "execution.mode=live trades real money and needs execution.confirm_live=true "
                "(MLCRYPTO_EXECUTION__CONFIRM_LIVE=true); paper is the default"
            )
        return self


class FeedSettings(_Section):
    polygon_api_key: SecretStr | None = None
    polygon_ws_url: str = "wss://socket.polygon.io/crypto"
    polygon_rest_url: str = "https://api.polygon.io"
    binance_rest_url: str = "https://api.binance.com"
    replay_host: str = "127.0.0.1"
    replay_port: int = Field(default=8765, ge=0, le=65535)
    replay_speed: float = Field(default=60.0, gt=0, description="1 = real time; N = N times faster.")
    reconnect_initial_seconds: float = Field(default=1.0, gt=0)
    reconnect_max_seconds: float = Field(default=60.0, gt=0)
    write_batch_events: int = Field(default=500, ge=1)
    write_batch_seconds: float = Field(default=0.5, gt=0)
    http_timeout_seconds: float = Field(default=10.0, gt=0)
    http_max_retries: int = Field(default=5, ge=0, le=20)
    http_backoff_seconds: float = Field(default=0.5, ge=0, le=60, description="First REST retry delay; doubles.")
    rest_page_limit: int = Field(default=50_000, ge=1, le=50_000, description="Polygon aggregates `limit`.")
    replay_api_key: SecretStr = Field(default=SecretStr("replay"), description="Key the replay server accepts.")
    replay_rest_port: int = Field(default=8766, ge=0, le=65535)
    replay_events_per_message: int = Field(default=1000, ge=1, le=100_000, description="Fast replay packing.")
    stable_connection_seconds: float = Field(
        default=30.0, gt=0, description="A connection must last this long before the reconnect backoff resets."
    )
    repair_min_interval_seconds: float = Field(
        default=60.0, ge=0, description="At most one REST gap repair per this many seconds (reconnect storms)."
    )
    reject_log_interval_seconds: float = Field(
        default=60.0, gt=0, description="Dropped feed input is logged once per kind per this many seconds."
    )
    # Live source and keyless venue data (issue 11): Kraken's public REST (via ccxt) and WebSocket v2.
    source: Literal["auto", "polygon", "kraken", "replay"] = Field(
        default="auto", description="auto: Polygon with a key, else Kraken when it answers, else the local replay."
    )
    kraken_rest_url: str = "https://api.kraken.com"
    kraken_ws_url: str = "wss://ws.kraken.com/v2"
    kraken_rate_limit_ms: int = Field(default=1000, ge=0, le=60_000, description="ccxt throttle between REST calls.")
    kraken_repair_lookback_minutes: int = Field(default=720, ge=0, le=720, description="Gap repair of an empty store.")
    binance_quote: str = Field(default="USDT", description="Quote of the deep-history Binance backfill.")
    replay_live: bool = Field(default=True, description="Replay re-timed to now at wall-clock pace (core.feeds.replay_live).")
    replay_anchor: datetime = Field(
        default=datetime(2026, 4, 7, 22, tzinfo=UTC), description="Recorded hour shown as the current hour (replay_live)."
    )


class DecisionRule(StrEnum):
    """How a model-scored signal is accepted (core.decision_rule; docs/ml.md "Decision rule")."""

    EV = "ev"  # net expected value from p and the model's own TP/SL, after fees and slippage, above ml.min_ev
    THRESHOLD = "threshold"  # SPEC: calibrated p >= strategy.<name>.min_confidence


class MLSettings(_Section):
    decision_rule: DecisionRule = DecisionRule.THRESHOLD  # by the OOS book evidence, docs/ml.md "Decision rule"
    min_ev: float = Field(default=0.0, ge=-0.05, le=0.05, description="EV rule: take when net EV > this (fraction of notional).")
    edge_features: bool = Field(default=False, description="Add models.edge_features' context inputs (issue 12; see docs/ml.md).")
    train_all_symbols: bool = Field(default=False, description="Train on every coin in the data file, not just data.symbols.")
    outcome_features: bool = Field(
        default=False, description="Own settled outcomes as features (models.edge_features; the scorers compute them)."
    )
    tracking_uri: str | None = Field(default=None, description="Defaults to a local store under var_dir/mlflow.")
    experiment_prefix: str = "mlcrypto"
    registered_model_prefix: str = "mlcrypto"
    walk_forward_folds: int = Field(default=4, ge=2, le=50)
    embargo: timedelta = timedelta(hours=72)
    promotion_metric: Literal["total_return", "sharpe"] = "total_return"
    promotion_min_improvement: float = Field(default=0.0, ge=0)
    train_end: str = Field(default="2024-01-01", description="Main job: train before, paper-trade after.")
    random_seed: int = 7
    n_estimators: int = Field(default=200, ge=1, le=5000)
    max_depth: int = Field(default=4, ge=1, le=16)
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    # Optuna inside nested walk-forward folds (models.tuning; docs/ml.md "Tuning"). 0 = off: the measured
    # search does not beat these defaults out of sample and would multiply the weekly retrain's time.
    tuning_trials: int = Field(
        default=0, ge=0, le=1000, description="Optuna trials per search (each outer fold + the final model); 0 = off."
    )
    tuning_inner_folds: int = Field(default=2, ge=2, le=10, description="Inner walk-forward folds scoring each trial.")


class AlertSettings(_Section):
    slack_webhook_url: SecretStr | None = None
    timeout_seconds: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)


class ScheduleSettings(_Section):
    scan_cron: str = "*/5 * * * *"
    manage_cron: str = "* * * * *"
    health_cron: str = "*/15 * * * *"
    retrain_cron: str = "0 3 * * 1"
    # Orchestration (Prefect) and the UIs `mlcrypto up` starts; links in flow artifacts point here.
    prefect_port: int = Field(default=4200, ge=1, le=65535)
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    replay_days: int = Field(default=7, ge=1, le=90, description="Main job: days replayed as Prefect flow runs.")
    replay_step_hours: int = Field(default=1, ge=1, le=24, description="Main job: simulated hours per scan flow run.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MLCRYPTO_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    data: DataSettings = DataSettings()
    store: StoreSettings = StoreSettings()
    strategy: StrategySettings = StrategySettings()
    risk: RiskSettings = RiskSettings()
    execution: ExecutionSettings = ExecutionSettings()
    feed: FeedSettings = FeedSettings()
    ml: MLSettings = MLSettings()
    alerts: AlertSettings = AlertSettings()
    schedule: ScheduleSettings = ScheduleSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        check_environment(os.environ)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get("MLCRYPTO_SETTINGS_FILE")
        if path:
            sources.append(_file_source(settings_cls, Path(path)))
        return tuple(sources)

    # Derived paths: one place decides where things live under var_dir.
    @property
    def duckdb_path(self) -> Path:
        return self.store.duckdb_path or self.data.var_dir / "store.duckdb"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.ml.tracking_uri or f"sqlite:///{(self.data.var_dir / 'mlflow' / 'mlflow.db').as_posix()}"

    @property
    def reports_dir(self) -> Path:
        return self.data.var_dir / "reports"

    def fingerprint(self) -> str:
        """A short hash of the effective settings (secrets excluded) to log with every run."""
        dumped = self.model_dump(mode="json")
        return hashlib.sha256(json.dumps(dumped, sort_keys=True, default=str).encode()).hexdigest()[:12]


# MLCRYPTO_* variables read elsewhere (not settings fields).
OTHER_ENV = frozenset({"MLCRYPTO_SETTINGS_FILE", "MLCRYPTO_REQUIRE_POSTGRES", "MLCRYPTO_TEST_PG_DSN",
                       "MLCRYPTO_BENCH_MAIN_JOB", "MLCRYPTO_BENCH_REHEARSAL_MINUTES"})


def _env_names(model: type[BaseModel], prefix: str) -> tuple[set[str], set[str]]:
    """Every valid MLCRYPTO_ variable name of `model` and the prefixes under which any key is valid (dicts)."""
    names: set[str] = set()
    open_prefixes: set[str] = set()
    for name, info in model.model_fields.items():
        full = f"{prefix}{name.upper()}"
        names.add(full)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            sub, subopen = _env_names(ann, full + "__")
            names |= sub
            open_prefixes |= subopen
        elif getattr(ann, "__origin__", None) is dict:
            open_prefixes.add(full + "__")
    return names, open_prefixes


def check_environment(environ: Any) -> None:
    """Refuse an MLCRYPTO_* variable that names no setting, suggesting the closest valid name."""
    names, open_prefixes = _env_names(Settings, "MLCRYPTO_")
    valid = names | OTHER_ENV
    unknown = [
        k for k in environ
        if k.upper().startswith("MLCRYPTO_") and k.upper() not in valid
        and not any(k.upper().startswith(p) for p in open_prefixes)
    ]
    if unknown:
        lines = []
        for k in sorted(unknown):
            close = difflib.get_close_matches(k.upper(), sorted(valid), n=1, cutoff=0.6)
            lines.append(f"  {k}: no such setting" + (f"; did you mean {close[0]}?" if close else ""))
        raise ConfigError("unknown MLCRYPTO_ environment variable(s):\n" + "\n".join(lines))


def _file_source(settings_cls: type[BaseSettings], p: Path) -> PydanticBaseSettingsSource:
    """The settings file as a source; a file that does not parse -> ConfigError naming file and line."""
    if not p.is_file():
        raise ConfigError(f"MLCRYPTO_SETTINGS_FILE={p} does not exist")
    if p.suffix not in {".toml", ".yaml", ".yml"}:
        raise ConfigError(f"settings file {p} must end in .toml, .yaml or .yml")
    try:
        if p.suffix == ".toml":
            return TomlConfigSettingsSource(settings_cls, toml_file=p)
        return YamlConfigSettingsSource(settings_cls, yaml_file=p)
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "<problem> (at line L, column C)": no content of the file, so no secret.
        raise ConfigError(f"settings file {p} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"settings file {p} is not UTF-8 text (byte offset {exc.start})") from None
    except Exception as exc:  # noqa: BLE001 - yaml.YAMLError; its text quotes the file, so only problem and line are shown
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown line"
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"settings file {p} is not valid YAML at {where}: {problem}") from None


def _masked(value: Any, depth: int = 0) -> Any:
    """A validation input with every secret-named entry replaced, for the `got ...` of an error."""
    from core.redact import is_secret_name

    if depth > 20:
        return "..."
    if isinstance(value, dict):
        return {k: "<redacted>" if is_secret_name(str(k)) else _masked(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v, depth + 1) for v in value]
    return value


def load_settings(**overrides: Any) -> Settings:
    """Build the settings or raise ConfigError naming each bad field and its allowed range.

    The message is redacted by value: no secret (from the input, the environment or the settings file)
    can appear in it, whatever pydantic echoes."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        errors = exc.errors()
        secrets = known_secrets(extra=[overrides, *(e.get("input") for e in errors)])
        lines = []
        for err in errors:
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            secret = any(w in field for w in ("key", "password", "dsn", "webhook", "secret"))
            got = "<redacted>" if secret else repr(_masked(err.get("input")))[:300]
            lines.append(f"  {field}: {err['msg']} (got {got})")
        raise ConfigError(redact("invalid settings:\n" + "\n".join(lines), secrets)) from None
    except SettingsError as exc:  # an env value that cannot be parsed at all (e.g. bad JSON)
        msg = f"invalid settings: {exc}; nested values in env take JSON"
        raise ConfigError(redact(msg, known_secrets(extra=[overrides]))) from None
    except ConfigError as exc:
        raise ConfigError(redact(str(exc), known_secrets(extra=[overrides]))) from None
