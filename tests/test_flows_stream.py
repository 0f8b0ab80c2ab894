"""streaming-ingest as a real flow run: the local replay servers (WebSocket + REST, Polygon's
protocol) stream recorded 1m candles, the stream client writes them to a DuckDB store in tmp."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from core.settings import load_settings
from core.storage.duckdb_store import DuckDBStore


def test_streaming_ingest_when_no_polygon_key_then_replay_candles_land_in_store_unchanged(
    prefect_harness: str, tmp_path: Path, real_candles
) -> None:
    from flows.streaming_ingest import streaming_ingest
    from tasks.runtime import open_runtime

    # Arrange: the replay source (offline; auto would try Kraken first), free ports, a fast replay.
    settings = load_settings(
        data={"var_dir": tmp_path, "symbols": ["BTC", "ETH"]},
        feed={"source": "replay", "replay_live": False, "replay_port": 0, "replay_rest_port": 0, "replay_speed": 200_000.0},
    )
    store = DuckDBStore(settings.duckdb_path)
    rt = open_runtime(settings, store=store)
    # Act
    state = streaming_ingest(seconds=6, runtime=rt, return_state=True)
    stats = state.result()
    # Assert: rows were written once each, and every stored bar equals the recorded one.
    stored = store.read_many(["BTC", "ETH"], "1m")
    assert state.is_completed() and stats["connects"] >= 1
    assert stored.height > 1000 and stored.height == stored.unique(["symbol", "ts"]).height
    first, last = stored["ts"].min(), stored["ts"].max()
    recorded = real_candles("1m", ["BTC", "ETH"]).filter(pl.col("ts").is_between(first, last))
    joined = stored.join(recorded, on=["symbol", "ts"], how="inner", suffix="_rec")
    assert joined.height == stored.height
    for col in ("open", "high", "low", "close", "volume"):
        assert (joined[col] - joined[f"{col}_rec"]).abs().max() < 1e-9
    store.close()
