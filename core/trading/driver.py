"""The driver contract: what executes a book's orders. Two implementations, chosen explicitly by mode:

- core.trading.simulated.SimulatedDriver (Mode.PAPER): a SimulatedVenue (the paper venue) fills the
  book's orders against each bar with the shared fill rules; exits the position rules trigger are
  executed at the venue at the rule's price.
- core.trading.live.LiveDriver (Mode.LIVE): a real venue (Hummingbot) fills them; the driver books the
  fills the venue reports and turns exit decisions into venue orders.

The fast backtest executes the same positions in memory (core.backtest.execution.FastExecution).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from core.positions import Bar
from core.venues.base import Venue

if TYPE_CHECKING:
    from core.trading.account import Account


class Mode(StrEnum):
    PAPER = "paper"
    LIVE = "live"


class Driver(Protocol):
    mode: Mode

    @property
    def venue(self) -> Venue: ...

    def restore(self, account: Account) -> None:
        """After the journal was folded: bring the venue (paper) in line with the book."""

    def sync(self, account: Account, *, resubmit: bool) -> list[Any]:
        """Book what the venue reports (live fills); paper: nothing to do. Returns Filled/Exited events."""

    def on_bar(self, account: Account, symbol: str, bar: Bar) -> list[Any]:
        """Apply one closed bar of `symbol` to its open positions; returns the position events."""
