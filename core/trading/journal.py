"""The journal: every book event is ONE record of kind 'ledger' written with ONE put_records call,
holding the full new state of every entity it touched plus the cash and totals after it; that makes
each event atomic. After it, the per-kind views ('position', 'order', 'fill', 'trade', 'decision') are
upserted for readers (models.outcomes, the CLI); they are derived and rebuilt on load, so a crash
between the journal write and the views loses nothing. Records go to a RecordStore (the store's record
tables), never to the candle tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.domain import ClosedTrade, Decision, Fill, Order
from core.errors import StoreError
from core.positions import ManagedPosition
from core.storage.base import RecordStore
from core.trading.book import Book

JOURNAL = "ledger"
VIEWS = ("position", "order", "fill", "trade", "decision")


class Journal:
    def __init__(self, records: RecordStore) -> None:
        self.records = records
        self.seq = 0

    def load(self, book: Book) -> Book:
        """Fold every stored event into `book` in key order; rewrite the last event's views (the only
        ones a crash can have left unwritten)."""
        events = sorted(self.records.get_records(JOURNAL), key=lambda kv: kv[0])
        for key, payload in events:
            book.fold(payload)
            self.seq = max(self.seq, int(key))
        if events:
            last = events[-1][1]
            self._write_views(
                [book.positions[d["position_id"]] for d in last.get("positions", [])],
                [book.orders[d["client_order_id"]] for d in last.get("orders", [])],
                [book.fills[d["fill_id"]] for d in last.get("fills", [])],
                [book.trades[d["position_id"]] for d in last.get("trades", [])],
                [book.decisions[d["signal_id"]] for d in last.get("decisions", [])],
            )
        return book

    def commit(
        self,
        book: Book,
        event: str,
        positions: Iterable[ManagedPosition] = (),
        orders: Iterable[Order] = (),
        fills: Iterable[Fill] = (),
        trades: Iterable[ClosedTrade] = (),
        decisions: Iterable[Decision] = (),
    ) -> None:
        ps, os_, fs, ts, ds = list(positions), list(orders), list(fills), list(trades), list(decisions)
        self.seq += 1
        payload = {
            "event": event,
            **book.totals(),
            "positions": [p.to_dict() for p in ps],
            "orders": [o.model_dump(mode="json") for o in os_],
            "fills": [f.model_dump(mode="json") for f in fs],
            "trades": [t.model_dump(mode="json") for t in ts],
            "decisions": [d.model_dump(mode="json") for d in ds],
        }
        self.records.put_records(JOURNAL, [(f"{self.seq:012d}", payload)])  # the atomic write of this event
        self._write_views(ps, os_, fs, ts, ds)

    def _write_views(
        self, positions: list[ManagedPosition], orders: list[Order], fills: list[Fill], trades: list[ClosedTrade],
        decisions: list[Decision],
    ) -> None:
        rows: dict[str, list[tuple[str, dict[str, Any]]]] = {
            "position": [(p.position_id, p.to_dict()) for p in positions],
            "order": [(o.client_order_id, o.model_dump(mode="json")) for o in orders],
            "fill": [(f.fill_id, f.model_dump(mode="json")) for f in fills],
            "trade": [(t.position_id, t.model_dump(mode="json")) for t in trades],
            "decision": [(d.signal_id, d.model_dump(mode="json")) for d in decisions],
        }
        for kind in VIEWS:
            if rows[kind]:
                self.records.put_records(kind, rows[kind])


def has_journal(records: RecordStore) -> bool:
    return bool(records.get_records(JOURNAL))


def reset_journal(records: RecordStore) -> int:
    """Remove a stored book (journal and views) in ONE transaction, e.g. before a paper replay re-trades
    history: a kill half-way leaves either the whole book or none of it."""
    return records.delete_kinds([JOURNAL, *VIEWS])


# Each view kind, the journal list it is derived from and the id keying it.
_VIEW_SOURCES = {"position": ("positions", "position_id"), "order": ("orders", "client_order_id"),
                 "fill": ("fills", "fill_id"), "trade": ("trades", "position_id"), "decision": ("decisions", "signal_id")}


def check_journal_agrees(records: RecordStore) -> None:
    """Start-up guard: every view kind agrees with the journal (a half-done reset or a hand edit is
    refused, never traded on). A view may lack only the last event's entities (a crash between the
    journal write and its views, which Journal.load repairs)."""
    journal = sorted(records.get_records(JOURNAL), key=lambda kv: kv[0])
    last = journal[-1][1] if journal else {}
    problems = []
    for kind in VIEWS:
        source, id_field = _VIEW_SOURCES[kind]
        ids = {d[id_field] for _, p in journal for d in p.get(source, [])}
        recent = {d[id_field] for d in last.get(source, [])}
        keys = {k for k, _ in records.get_records(kind)}
        if extra := keys - ids:
            problems.append(f"{len(extra)} {kind} record(s) the journal never wrote")
        if missing := ids - keys - recent:
            problems.append(f"{len(missing)} {kind} record(s) of the journal missing")
    if problems:
        raise StoreError(
            "the paper ledger's record kinds disagree (an interrupted reset?): " + "; ".join(problems)
            + ". Run again with --reset to start from an empty book"
        )
