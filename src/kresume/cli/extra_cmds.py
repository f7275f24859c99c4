"""Sub-commands provided by other parts of kresume (sidecar, operator, dev tools)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach ``sidecar``, ``operator``, ``demo`` and the ``dev`` group (``dev node``)."""
    from kresume.devtools.demo import cli as demo_cli
    from kresume.devtools.node import cli as node_cli
    from kresume.operator import cli as operator_cli
    from kresume.sidecar import cli as sidecar_cli

    app.command("sidecar", help=(sidecar_cli.command.__doc__ or "Run the checkpoint sidecar."))(sidecar_cli.command)
    app.command("operator", help=(operator_cli.command.__doc__ or "Run the operator."))(operator_cli.command)
    app.command("demo", help=(demo_cli.command.__doc__ or "Run the end-to-end demo."))(demo_cli.command)
    dev_app = typer.Typer(help="Development tools (local node agent). Not for production.", no_args_is_help=True)
    dev_app.command("node", help=(node_cli.command.__doc__ or "Run the local node agent."))(node_cli.command)
    app.add_typer(dev_app, name="dev")
