"""The one command-line entry point: `mlcrypto --help`.

Each area registers its commands from its own module in deployments/commands/ (register(app)).
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

import deployments.commands as _commands

app = typer.Typer(
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
