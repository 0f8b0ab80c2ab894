"""The one command-line entry point: `mlcrypto --help`.

Each area registers its commands from its own module in deployments/commands/ (register(app)).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback
from typing import Any

import typer

import deployments.commands as _commands
from core.errors import ConfigError
from core.redact import known_secrets, redact


class _App(typer.Typer):
    """The Typer app, with one last guard: an error no command handled is printed redacted by value
    (no configured secret ever reaches the terminal); exit code 2 for a configuration error, else 1."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ConfigError as exc:
            sys.stderr.write(redact(f"configuration error: {exc}\n", known_secrets()))
            sys.exit(2)
        except Exception as exc:  # noqa: BLE001 - the process's last boundary; SystemExit/Ctrl-C pass
            text = "".join(traceback.format_exception(exc))
            sys.stderr.write(redact(text, known_secrets()))
            sys.exit(1)


app = _App(
    name="mlcrypto",
    help="ML-refined crypto trading system: data, strategies, models, paper/live trading.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # never print locals: they may hold secrets
)

for _mod in sorted(m.name for m in pkgutil.iter_modules(_commands.__path__)):
    importlib.import_module(f"deployments.commands.{_mod}").register(app)


if __name__ == "__main__":
    app()
