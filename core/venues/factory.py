"""build_venue(settings, store): the one place that picks paper or live execution.

Paper is the default. Live trading needs BOTH execution.mode=live and execution.confirm_live=true;
the settings validator already refuses the first without the second, and this guard checks again so
that settings built around validation (model_construct, copies) cannot reach real money either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from core.errors import ConfigError
from core.settings import Settings
from core.storage.base import Store
from core.venues.base import Venue

if TYPE_CHECKING:  # the live venue imports httpx: only load it when live trading is asked for
    from core.venues.hummingbot import HummingbotVenue

LIVE_REFUSED = (
    "live trading refused: execution.mode={mode!r} and execution.confirm_live={confirm}. Real orders are "
    "sent only with execution.mode=live AND execution.confirm_live=true "
    "(MLCRYPTO_EXECUTION__MODE=live MLCRYPTO_EXECUTION__CONFIRM_LIVE=true); paper is the default"
)


def live_allowed(settings: Settings) -> bool:
    ex = settings.execution
    return ex.mode == "live" and ex.confirm_live is True


def build_venue(settings: Settings, store: Store, alert: Callable[[str], None] | None = None) -> Venue:
    """A PaperVenue unless live trading is explicitly confirmed; then a HummingbotVenue journalling
    its orders in `store` and telling `alert` (the operator's channel) of in-doubt or adopted orders."""
    ex = settings.execution
    if ex.mode == "paper":
        from core.venues.paper import PaperVenue  # written by the execution area; loaded on demand

        return PaperVenue(settings, store)
    if not live_allowed(settings):
        raise ConfigError(LIVE_REFUSED.format(mode=ex.mode, confirm=ex.confirm_live))
    return build_live_venue(settings, store, alert)


def build_live_venue(settings: Settings, store: Store, alert: Callable[[str], None] | None = None) -> HummingbotVenue:
    if not live_allowed(settings):
        raise ConfigError(LIVE_REFUSED.format(mode=settings.execution.mode, confirm=settings.execution.confirm_live))
    from core.venues.hummingbot import HummingbotVenue
    from core.venues.order_journal import OrderJournal

    return HummingbotVenue(settings, OrderJournal(store), alert=alert)
