"""Live-venue commands: `mlcrypto venue-status` and `mlcrypto reconcile` (both place no order).

They talk to the Hummingbot API named in the execution settings. Placing orders stays behind the
live guard (core.venues.factory.build_venue); these read the venue and repair the journal only.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.errors import ConfigError, TradingSystemError
from core.reconcile import reconcile as reconcile_journal
from core.settings import Settings, load_settings
from core.storage.factory import open_store
from core.venues.hummingbot import HummingbotVenue
from core.venues.order_journal import OrderJournal


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        Console(stderr=True).print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def venue_status() -> None:
    """Balances and our resting orders at the Hummingbot venue (read only)."""
    settings = _settings()
    store = open_store(settings)
    venue = HummingbotVenue(settings, OrderJournal(store))
    try:
        balances = venue.balances()
        available = venue.balances(available=True)
        orders = venue.open_orders()
    except TradingSystemError as exc:
        Console(stderr=True).print(f"[red]venue error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        venue.close()
        store.close()
    ex = settings.execution
    console = Console()
    console.print(f"Hummingbot {ex.hummingbot_url} account={ex.hummingbot_account} connector={ex.hummingbot_connector} mode={ex.mode}")
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
    store = open_store(settings)
    venue = HummingbotVenue(settings, OrderJournal(store))
    try:
        report = reconcile_journal(venue, venue.journal)
    except TradingSystemError as exc:
        Console(stderr=True).print(f"[red]venue error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        venue.close()
        store.close()
    if as_json:
        payload = {k: v for k, v in report.__dict__.items() if k != "since"} | {"since": report.since.isoformat(), "clean": report.clean}
        typer.echo(json.dumps(payload, indent=2, default=str))
    else:
        Console().print(report.summary())
    raise typer.Exit(0 if report.clean else 3)


def register(app: typer.Typer) -> None:
    app.command("venue-status")(venue_status)
    app.command("reconcile")(reconcile)
