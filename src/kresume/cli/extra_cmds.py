"""Sub-commands provided by other parts of kresume (sidecar, operator, dev tools).

Their modules import heavier dependencies (watchdog, kopf, kubernetes), so each is imported only
when its command runs: the store commands stay fast to start.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the sidecar, operator and dev command groups."""
    from kresume.operator import cli as operator_cli
    from kresume.sidecar import cli as sidecar_cli

    app.command("sidecar", help=(sidecar_cli.command.__doc__ or "Run the checkpoint sidecar."))(sidecar_cli.command)
    app.command("operator", help=(operator_cli.command.__doc__ or "Run the operator."))(operator_cli.command)
