"""Sub-commands provided by other parts of kresume: ``sidecar``, ``operator``, and plug-ins.

Plug-ins are the ``kresume.commands`` entry points (``pyproject.toml``): ``demo`` and the ``dev`` group come
from ``kresume.devtools`` that way, so the product never imports the development package. An entry point is a
typer command function (mounted as ``kresume <name>``) or a ``typer.Typer`` (mounted as the group ``<name>``).
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

import typer

#: Entry-point group of CLI plug-ins.
COMMANDS_GROUP = "kresume.commands"

logger = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    """Attach ``sidecar``, ``operator`` and every ``kresume.commands`` plug-in (``demo``, ``dev``).

    A plug-in whose module cannot be imported (its extra is not installed) is left out with a debug log line;
    any other error while loading it propagates.
    """
    from kresume.operator import cli as operator_cli
    from kresume.sidecar import cli as sidecar_cli

    app.command("sidecar", help=(sidecar_cli.command.__doc__ or "Run the checkpoint sidecar."))(sidecar_cli.command)
    app.command("operator", help=(operator_cli.command.__doc__ or "Run the operator."))(operator_cli.command)
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            plugin = ep.load()
        except ImportError as exc:
            logger.debug("kresume %s: not available (%s)", ep.name, exc)
            continue
        if isinstance(plugin, typer.Typer):
            app.add_typer(plugin, name=ep.name)
        else:
            app.command(ep.name, help=(plugin.__doc__ or None))(plugin)
