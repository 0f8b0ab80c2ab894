"""Data-quality gate on the candles a scan will use (Great Expectations 1.x)."""
