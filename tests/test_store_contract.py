"""One contract suite for every CandleStore backend (DuckDB and Postgres), on real candles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from core.domain import CANDLE_SCHEMA
from core.errors import DataQualityError, StoreError
from core.storage.base import CandleStore
from tests.conftest import make_store

T0 = datetime(2024, 3, 1, tzinfo=UTC)
T1 = datetime(2024, 3, 3, tzinfo=UTC)


@pytest.fixture
def hourly(real_candles) -> pl.DataFrame:
    return real_candles("1h", ["BTC", "ETH", "SOL"], T0, T1)


def test_store_when_opened_then_satisfies_protocol_and_migrates_once(store) -> None:
    assert isinstance(store, CandleStore)
    store.init_schema()
    store.init_schema()  # idempotent
    assert store.schema_version() == 1


def test_upsert_when_real_bars_then_read_back_identical_sorted(store, hourly) -> None:
    shuffled = hourly.sample(fraction=1.0, shuffle=True, seed=3)

    written = store.upsert_candles(shuffled)

    got = store.read_many(["SOL", "BTC", "ETH"], "1h")
    assert written == len(hourly) == 144
    assert got.schema == pl.Schema(CANDLE_SCHEMA)
    assert got.equals(hourly.sort("symbol", "ts"))


def test_upsert_when_repeated_then_no_duplicates_and_values_updated(store, hourly) -> None:
    store.upsert_candles(hourly)
    store.upsert_candles(hourly)
    changed = hourly.filter(pl.col("symbol") == "BTC").head(2).with_columns(volume=pl.col("volume") + 1.5)

    store.upsert_candles(changed)

    got = store.read_candles("BTC", "1h")
    assert len(got) == 48
    assert got["volume"].head(2).to_list() == changed["volume"].to_list()
    assert got["volume"].slice(2).to_list() == hourly.filter(pl.col("symbol") == "BTC")["volume"].slice(2).to_list()


def test_read_candles_when_bounds_given_then_start_inclusive_end_exclusive(store, hourly) -> None:
    store.upsert_candles(hourly)
    start, end = T0 + timedelta(hours=5), T0 + timedelta(hours=9)

    got = store.read_candles("ETH", "1h", start, end)

    assert got["ts"].to_list() == [start + timedelta(hours=h) for h in range(4)]
    assert store.read_candles("ETH", "4h").is_empty()
    assert store.read_candles("XXX", "1h").is_empty()


def test_read_when_bound_in_other_zone_then_same_instant(store, hourly) -> None:
    store.upsert_candles(hourly)
    plus2 = T0.astimezone(timezone(timedelta(hours=2))) + timedelta(hours=1)

    got = store.read_candles("BTC", "1h", start=plus2)

    assert got["ts"][0] == T0 + timedelta(hours=1)
    with pytest.raises(ValueError, match="naive"):
        store.read_candles("BTC", "1h", start=datetime(2024, 3, 1))


def test_last_bars_when_many_symbols_then_last_n_each_before_end(store, hourly) -> None:
    store.upsert_candles(hourly)
    end = T0 + timedelta(hours=30)

    got = store.last_bars(["BTC", "ETH", "SOL", "NOPE"], "1h", 5, end=end)

    assert got.group_by("symbol").len().sort("symbol").rows() == [("BTC", 5), ("ETH", 5), ("SOL", 5)]
    expected = hourly.filter(pl.col("ts") < end).sort("symbol", "ts").group_by("symbol", maintain_order=True).tail(5)
    assert got.equals(expected)
    assert store.last_bars(["BTC"], "1h", 1000)["ts"].max() == T1 - timedelta(hours=1)


def test_last_bars_when_symbols_stale_or_gapped_then_still_exact_last_n(store, real_candles) -> None:
    # BTC runs to T1; ETH stopped 30 h earlier (stale); SOL misses 6 h near the end (gap in the window);
    # rows are written out of time order. The result must equal the plain "last n per symbol".
    bars = real_candles("1h", ["BTC", "ETH", "SOL"], T0 - timedelta(days=3), T1)
    bars = bars.filter(
        ~((pl.col("symbol") == "ETH") & (pl.col("ts") >= T1 - timedelta(hours=30)))
        & ~((pl.col("symbol") == "SOL") & pl.col("ts").is_between(T1 - timedelta(hours=9), T1 - timedelta(hours=4)))
    )
    store.upsert_candles(bars.sort("ts", descending=True))
    store.upsert_candles(bars.filter(pl.col("symbol") == "SOL").head(5))  # a later, older write

    def expected(n: int, end: datetime | None) -> pl.DataFrame:
        kept = bars if end is None else bars.filter(pl.col("ts") < end)
        return kept.sort("symbol", "ts").group_by("symbol", maintain_order=True).tail(n)

    for n, end in [(10, None), (24, None), (10, T1 - timedelta(hours=3)), (500, None), (1, T0 - timedelta(days=5))]:
        got = store.last_bars(["SOL", "ETH", "BTC", "BTC"], "1h", n, end=end)
        assert got.equals(expected(n, end)), (n, end)
    assert store.last_bars(["BTC"], "1d", 5).is_empty()
    assert store.last_bars(["BTC"], "1h", 10**9).equals(expected(10**9, None).filter(pl.col("symbol") == "BTC"))


def test_coverage_when_gap_then_counts_missing_bars_and_lists_gaps(store, hourly) -> None:
    holed = hourly.filter(~((pl.col("symbol") == "BTC") & pl.col("ts").is_between(T0 + timedelta(hours=10), T0 + timedelta(hours=12))))
    store.upsert_candles(holed)

    cov = store.coverage()
    gaps = store.gaps("BTC", "1h")

    btc = cov.filter(pl.col("symbol") == "BTC").row(0, named=True)
    assert (btc["first"], btc["last"], btc["rows"], btc["expected"], btc["missing"]) == (
        T0, T1 - timedelta(hours=1), 45, 48, 3)
    assert cov.filter(pl.col("symbol") == "ETH")["missing"].item() == 0
    assert gaps.select("gap_start", "gap_end", "missing").rows() == [
        (T0 + timedelta(hours=10), T0 + timedelta(hours=13), 3)]
    assert store.gaps("ETH", "1h").is_empty()


def test_upsert_when_bad_bar_in_batch_then_nothing_written(store, hourly) -> None:
    bad = hourly.with_columns(
        high=pl.when(pl.col("ts") == T0 + timedelta(hours=7)).then(pl.col("low") * 0.5).otherwise(pl.col("high"))
    )

    with pytest.raises(DataQualityError, match="high < low"):
        store.upsert_candles(bad)

    assert store.coverage().is_empty()


def test_upsert_when_failure_mid_batch_then_rolled_back_previous_data_intact(
    store_kind, request, tmp_path: Path, hourly
) -> None:
    # Arrange: small chunks, and the second chunk of the failing call raises inside the transaction.
    s = make_store(store_kind, request, tmp_path, batch_rows=40)
    before = hourly.filter(pl.col("ts") < T0 + timedelta(hours=24))
    s.upsert_candles(before)
    calls = {"n": 0}
    real_write = s._write_chunk

    def failing_write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected failure")
        return real_write(*args, **kwargs)

    s._write_chunk = failing_write
    changed = hourly.with_columns(volume=pl.col("volume") * 2)

    # Act
    with pytest.raises(StoreError, match="rolled back"):
        s.upsert_candles(changed)

    # Assert: first chunk's writes undone, old rows unchanged, no new rows
    assert calls["n"] == 2
    assert s.read_many(["BTC", "ETH", "SOL"], "1h").equals(before.sort("symbol", "ts"))
    s._write_chunk = real_write
    assert s.upsert_candles(changed) == 144
    s.close()


def test_store_when_used_from_threads_then_all_writes_land(store, hourly) -> None:
    from concurrent.futures import ThreadPoolExecutor

    parts = [hourly.filter(pl.col("symbol") == s) for s in ("BTC", "ETH", "SOL")]

    with ThreadPoolExecutor(max_workers=4) as pool:  # first use from threads: migration runs once
        writes = list(pool.map(store.upsert_candles, parts))
        reads = list(pool.map(lambda _: store.last_bars(["BTC", "ETH", "SOL"], "1h", 3), range(6)))
        recs = list(pool.map(lambda i: store.put_records("t", [(f"k{i}", {"i": i})]), range(20)))

    assert writes == [48, 48, 48] and sum(recs) == 20
    assert all(len(r) <= 9 for r in reads)
    assert store.read_many(["BTC", "ETH", "SOL"], "1h").equals(hourly.sort("symbol", "ts"))
    assert sorted(k for k, _ in store.get_records("t")) == sorted(f"k{i}" for i in range(20))


def test_store_when_reopened_then_data_persists(store_kind, request, tmp_path: Path, hourly) -> None:
    from core.storage.duckdb_store import DuckDBStore

    first = make_store(store_kind, request, tmp_path)
    first.upsert_candles(hourly)
    first.put_records("k", [("a", {"x": 1})])
    first.close()

    again = DuckDBStore(first.path) if store_kind == "duckdb" else type(first)(first._dsn, schema=first.schema)

    assert again.read_many(["BTC", "ETH", "SOL"], "1h").equals(hourly.sort("symbol", "ts"))
    assert again.get_records("k") == [("a", {"x": 1})]
    assert again.schema_version() == 1
    again.close()


def test_records_when_put_get_delete_then_roundtrip_in_update_order(store) -> None:
    store.put_records("orders", [("o1", {"qty": 1.5, "tags": ["a"]}), ("o2", {"qty": 2}), ("o3", {"n": None})])
    store.put_records("orders", [("o1", {"qty": 9})])
    store.put_records("fills", [("o1", {"px": 3})])

    assert store.get_records("orders") == [("o2", {"qty": 2}), ("o3", {"n": None}), ("o1", {"qty": 9})]
    assert store.delete_records("orders", ["o2", "missing"]) == 1
    assert [k for k, _ in store.get_records("orders")] == ["o3", "o1"]
    assert store.get_records("fills") == [("o1", {"px": 3})]
    assert store.get_records("none") == []
    assert store.put_records("dup", [("x", {"v": 1}), ("y", {"v": 2}), ("x", {"v": 3})]) == 3
    assert store.get_records("dup") == [("y", {"v": 2}), ("x", {"v": 3})]  # like three puts in a row


def test_records_when_payload_not_json_then_store_error_and_nothing_written(store) -> None:
    with pytest.raises(StoreError, match="not JSON-able"):
        store.put_records("orders", [("ok", {"a": 1}), ("bad", {"ts": datetime(2024, 1, 1)})])

    assert store.get_records("orders") == []


# -- backend specifics: connection errors, single-writer DuckDB, factory --------------------------------


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://bob:s3cr3t@127.0.0.1:1/test", "postgresql://bob:***@127.0.0.1:1/test"),
        ("host=127.0.0.1 port=1 user=bob password=s3cr3t dbname=test", "password=***"),
    ],
)
def test_postgres_store_when_server_unreachable_then_store_error_with_password_redacted(dsn, shown) -> None:
    from core.storage.postgres_store import PostgresStore

    with pytest.raises(StoreError) as err:
        PostgresStore(dsn, connect_timeout=2)

    assert "s3cr3t" not in str(err.value)
    assert shown in str(err.value)
    assert "cannot connect" in str(err.value)


@pytest.mark.postgres
def test_postgres_store_when_database_missing_then_store_error_naming_it(pg_dsn) -> None:
    from core.storage.postgres_store import PostgresStore

    dsn = pg_dsn.replace("postgres@", "postgres:hunter22@").rsplit("/", 1)[0] + "/no_such_db_mlcrypto"

    with pytest.raises(StoreError, match="no_such_db_mlcrypto") as err:
        PostgresStore(dsn)

    assert "hunter22" not in str(err.value)


def test_postgres_store_when_schema_name_unsafe_then_store_error() -> None:
    from core.storage.postgres_store import PostgresStore

    with pytest.raises(StoreError, match="plain identifier"):
        PostgresStore("postgresql://x@127.0.0.1:1/db", schema='x"; DROP TABLE candles; --')


def test_duckdb_store_when_file_held_by_another_process_then_store_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb,sys,time; c=duckdb.connect({str(path)!r}); print('ok', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        from core.storage.duckdb_store import DuckDBStore

        with pytest.raises(StoreError, match="one writer process"):
            DuckDBStore(path)
    finally:
        holder.kill()
        holder.wait()


def test_open_store_when_defaults_then_duckdb_under_var_dir(tmp_path: Path) -> None:
    from core.settings import load_settings
    from core.storage.duckdb_store import DuckDBStore
    from core.storage.factory import open_store

    settings = load_settings(data={"var_dir": tmp_path / "var"})

    with open_store(settings) as s:
        s.init_schema()
        assert isinstance(s, DuckDBStore)
    assert (tmp_path / "var" / "store.duckdb").is_file()


@pytest.mark.postgres
def test_open_store_when_postgres_backend_then_postgres_store(pg_dsn) -> None:
    from core.settings import load_settings
    from core.storage.factory import open_store
    from core.storage.postgres_store import PostgresStore

    settings = load_settings(store={"backend": "postgres", "postgres_dsn": pg_dsn})

    s = open_store(settings)
    try:
        assert isinstance(s, PostgresStore) and s.schema == "public"
    finally:
        s.close()


def test_records_when_typed_ledger_records_stored_then_enums_come_back_as_the_same_members(store) -> None:
    from core.domain import (
        Decision,
        Fill,
        Liquidity,
        Order,
        OrderPurpose,
        OrderStatus,
        OrderType,
        ReasonCode,
        Side,
        StrategyName,
    )

    ts = datetime(2024, 3, 1, 12, tzinfo=UTC)
    decision = Decision(signal_id="s1", symbol="BTC", strategy=StrategyName.DCA, ts=ts, taken=False,
                        reason=ReasonCode.NOTIONAL_CAP, detail="open notional cap 50% reached")
    order = Order(client_order_id="c1", symbol="BTC", side=Side.SELL, order_type=OrderType.MARKET, quantity=0.5,
                  strategy=StrategyName.DCA, position_id="p1", created_ts=ts, status=OrderStatus.FILLED,
                  purpose=OrderPurpose.EXIT)
    fill = Fill(fill_id="f1", client_order_id="c1", symbol="BTC", side=Side.SELL, ts=ts, price=100.0, quantity=0.5,
                fee=0.2, liquidity=Liquidity.MAKER)
    store.put_records("typed", [(m.__class__.__name__, m.model_dump(mode="json")) for m in (decision, order, fill)])
    back = dict(store.get_records("typed"))
    assert back["Decision"]["reason"] == "notional_cap"  # stored as the code's value, not English
    d, o, f = Decision.model_validate(back["Decision"]), Order.model_validate(back["Order"]), Fill.model_validate(back["Fill"])
    assert (d, o, f) == (decision, order, fill)
    assert d.reason is ReasonCode.NOTIONAL_CAP and o.purpose is OrderPurpose.EXIT and o.status is OrderStatus.FILLED
    assert f.liquidity is Liquidity.MAKER
    with pytest.raises(ValueError):
        Order.model_validate(back["Order"] | {"purpose": "hedge"})  # an unknown purpose is refused, not stored as text
