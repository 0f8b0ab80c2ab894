"""Which exceptions an input boundary may swallow.

A boundary around untrusted input (a feed frame, a file) turns ANY failure of the parsing code into a
counted bad input: that includes BaseException subclasses raised by native code, e.g. polars'
`PanicException`, which `except Exception` lets through. It never swallows process control: Ctrl-C,
sys.exit, generator close and task cancellation must keep working.
"""

from __future__ import annotations

import asyncio

PROCESS_CONTROL: tuple[type[BaseException], ...] = (
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
    asyncio.CancelledError,
)


def is_process_control(exc: BaseException) -> bool:
    return isinstance(exc, PROCESS_CONTROL)
