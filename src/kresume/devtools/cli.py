"""``kresume dev …``: the development commands as one typer group (``kresume dev node``).

Not imported by the product: the main CLI finds this group, and ``kresume demo``, through the
``kresume.commands`` entry points declared in ``pyproject.toml`` (see ``kresume.cli.extra_cmds``).
"""

from __future__ import annotations

import typer

from kresume.devtools.node import cli as node_cli

app = typer.Typer(help="Development tools (local node agent). Not for production.", no_args_is_help=True)
app.command("node", help=(node_cli.command.__doc__ or "Run the local node agent."))(node_cli.command)
