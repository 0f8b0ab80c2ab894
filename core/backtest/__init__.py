"""Backtester: the same scan -> score -> manage -> execute path as paper trading, replayed over history."""
