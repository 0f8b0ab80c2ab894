"""Live-venue commands: `mlcrypto venue-status` and `mlcrypto reconcile` (both place no order).

They talk to the Hummingbot API named in the execution settings. Placing orders stays behind the
live guard (core.venues.factory.build_venue); these read the venue and repair the journal only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.errors import TradingSystemError
from core.reconcile import reconcile as reconcile_journal
from core.settings import Settings
from core.venues.hummingbot import HummingbotVenue
from core.venues.order_journal import OrderJournal
from deployments.commands.data import _settings, _store


@contextmanager
def _venue(settings: Settings) -> Iterator[HummingbotVenue]:
    """The Hummingbot venue over the store's order journal, both closed on the way out; a venue error
    inside the block is printed and ends the command with exit code 1."""
    store = _store(settings)
    venue = HummingbotVenue(settings, OrderJournal(store))
    try:
        yield venue
    except TradingSystemError as exc:
        Console(stderr=True).print(f"[red]venue error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        venue.close()
        store.close()


def venue_status() -> None:
    """Balances and our resting orders at the Hummingbot venue (read only)."""
    settings = _settings()
    with _venue(settings) as venue:
        balances = venue.balances()
        available = venue.balances(available=True)
        orders = venue.open_orders()
    ex = settings.execution
    console = Console()
    console.print(
        f"Hummingbot {ex.hummingbot_url} account={ex.hummingbot_account} connector={ex.hummingbot_connector} mode={ex.mode}"
    )
    table = Table("token", "units", "available")
    for token, units in sorted(balances.items()):
        table.add_row(token, f"{units:,.8g}", f"{available.get(token, units):,.8g}")
    console.print(table)
    table = Table("client_order_id", "venue id", "symbol", "side", "qty", "price", "filled", "status")
    for o in orders:
        table.add_row(o.client_order_id, o.venue_order_id or "", o.symbol, o.side.value, f"{o.quantity:g}",
                      f"{o.price:g}" if o.price else "market", f"{o.filled_quantity:g}", o.status.value)
    console.print(table)


def reconcile(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Reconcile the order journal with the venue: adopt, mark absent, record fills, report differences."""
    settings = _settings()
    with _venue(settings) as venue:
        report = reconcile_journal(venue, venue.journal)
    if as_json:
        payload = {k: v for k, v in report.__dict__.items() if k != "since"}
        payload |= {"since": report.since.isoformat(), "clean": report.clean}
        typer.echo(json.dumps(payload, indent=2, default=str))
    else:
        Console().print(report.summary())
    raise typer.Exit(0 if report.clean else 3)


def register(app: typer.Typer) -> None:
    app.command("venue-status")(venue_status)
    app.command("reconcile")(reconcile)
