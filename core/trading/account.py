"""The account: one Book (state and the only valuation), its Journal (durable events through a
RecordStore) and the Driver that executes it (simulated or live). Every change to the book is one
journalled event; the same signal never opens twice (the position id derives from the signal id); an
intent is stored before the venue sees it.
"""

from __future__ import annotations

from typing import Any

from core.domain import Decision, Order, OrderStatus, OrderType, ReasonCode
from core.errors import ConfigError
from core.positions import Bar, ManagedPosition
from core.risk import PortfolioView
from core.settings import Settings
from core.storage.base import RecordStore
from core.trading.book import Book
from core.trading.driver import Driver, Mode
from core.trading.entries import PlannedEntry
from core.trading.journal import Journal
from core.venues.base import SimulatedVenue, Venue


class Account:
    def __init__(self, records: RecordStore, settings: Settings, driver: Driver, capital: float | None = None) -> None:
        self.settings = settings
        self.driver = driver
        self.journal = Journal(records)
        self.book = Book.empty(settings.risk.capital if capital is None else capital)

    @classmethod
    def load(cls, records: RecordStore, settings: Settings, driver: Driver) -> Account:
        """Rebuild from the journal (empty: a fresh book), restore the paper venue, resend pending intents."""
        acc = cls(records, settings, driver)
        acc.journal.load(acc.book)
        driver.restore(acc)
        acc.resubmit_pending()
        return acc

    @property
    def mode(self) -> Mode:
        return self.driver.mode

    @property
    def venue(self) -> Venue:
        return self.driver.venue

    def commit(self, event: str, **entities: Any) -> None:
        self.journal.commit(self.book, event, **entities)

    # --- events ------------------------------------------------------------------------------------------

    def record_decisions(self, decisions: list[Decision]) -> None:
        """Store decisions (taken or skipped, with their reason codes) in one event."""
        if not decisions:
            return
        self.book.decisions.update({d.signal_id: d for d in decisions})
        self.commit("decision", decisions=decisions)

    def sizing_view(self, marks: dict[str, float]) -> PortfolioView:
        """The book's view for risk and sizing. Live, the cash is capped by the venue's fresh quote
        balance (Hummingbot: `refresh: true`, not its 5-minute cache), so sizing never spends money the
        venue does not hold (a transfer, or a fill not booked yet)."""
        if self.driver.mode is not Mode.LIVE:
            return self.book.view(marks)
        held = self.venue.balances().get(self.settings.data.quote)
        cash = self.book.cash if held is None else min(self.book.cash, held)
        return self.book.view(marks, cash=cash)

    def open(self, planned: PlannedEntry) -> ManagedPosition | None:
        """Open a planned entry: its orders as the venue will place them (lot and tick, so the book
        holds exactly what is sent), stored with the position BEFORE the venue sees them, then placed.
        An entry the venue would refuse (below its minimum amount or notional) is not opened: its
        decision is stored as skipped with that reason code, and None is returned."""
        pid = planned.position_id
        if pid in self.book.positions:
            # The same signal never opens twice; an entry whose send failed (a live venue's timeout) is
            # sent again (the venue's submit is idempotent and searches before resending).
            self.resubmit_pending(pid)
            return self.book.positions[pid]
        pos, decision = planned.position, planned.decision
        intents: list[Order] = []
        for o in planned.orders:
            prepared = self.venue.prepare(o)
            if not isinstance(prepared, Order):
                if decision is not None and decision.signal_id not in self.book.decisions:
                    skip = decision.model_copy(
                        update={"taken": False, "reason": ReasonCode(prepared.reason.value), "detail": prepared.detail}
                    )
                    self.record_decisions([skip])
                return None
            intents.append(prepared)
        _match_levels(pos, intents)
        self.book.positions[pid] = pos
        self.book.orders.update({o.client_order_id: o for o in intents})
        if decision is not None:
            self.book.decisions[decision.signal_id] = decision
        self.commit("open", positions=[pos], orders=intents, decisions=[decision] if decision else [])
        placed = [self.venue.submit(o) for o in intents]
        self.book.orders.update({o.client_order_id: o for o in placed})
        self.commit("submitted", orders=placed)
        return pos

    def resubmit_pending(self, position_id: str | None = None) -> list[Order]:
        """Send again the stored intents the venue never acknowledged (all, or one position's)."""
        pending = [
            o for o in self.book.orders.values()
            if o.status is OrderStatus.PENDING and (position_id is None or o.position_id == position_id)
        ]
        if not pending:
            return []
        placed = [self.venue.submit(o) for o in pending]
        self.book.orders.update({o.client_order_id: o for o in placed})
        self.commit("resubmitted", orders=placed)
        return placed

    def execute(self, skipped: list[Decision], entries: list[PlannedEntry]) -> list[str]:
        """A scan plan into the book: the skipped decisions not stored yet (one event), then each taken
        entry opened (idempotent per signal). Returns the opened position ids."""
        self.record_decisions([d for d in skipped if d.signal_id not in self.book.decisions])
        opened = (self.open(e) for e in entries)
        return [pos.position_id for pos in opened if pos is not None]

    def on_bar(self, symbol: str, bar: Bar) -> list[Any]:
        """One closed bar of `symbol` through the driver (a bar already applied is skipped)."""
        return self.driver.on_bar(self, symbol, bar)


def _match_levels(pos: ManagedPosition, orders: list[Order]) -> None:
    """The position's entry levels hold the quantized amount and limit price of their orders."""
    by_id = {o.client_order_id: o for o in orders}
    for lv in pos.entry_levels:
        o = by_id.get(lv.client_order_id)
        if o is None:
            continue
        lv.quantity = o.quantity
        if o.order_type is OrderType.LIMIT and o.price is not None:
            lv.price = o.price


def build_driver(settings: Settings, venue: Venue) -> Driver:
    """The driver for settings.execution.mode (paper is the default; live needs the live venue the
    factory only builds with mode=live AND confirm_live=true)."""
    from core.trading.live import LiveDriver
    from core.trading.simulated import SimulatedDriver

    if Mode(settings.execution.mode) is Mode.LIVE:
        return LiveDriver(venue)
    if not isinstance(venue, SimulatedVenue):
        raise ConfigError(f"paper mode needs a venue that fills against bars; got {type(venue).__name__}")
    return SimulatedDriver(venue, settings)


def paper_account(records: RecordStore, settings: Settings, *, load: bool = False) -> Account:
    """A paper account on these records: the simulated driver with a fresh PaperVenue; `load` rebuilds
    the stored book (and the venue from it), else the book starts empty."""
    from core.trading.simulated import SimulatedDriver
    from core.venues.paper import PaperVenue

    driver = SimulatedDriver(PaperVenue(settings), settings)
    return Account.load(records, settings, driver) if load else Account(records, settings, driver)
