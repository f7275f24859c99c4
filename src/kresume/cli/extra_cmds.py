"""Sub-commands provided by other parts of kresume (sidecar, operator, dev tools), mounted lazily."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the sidecar, operator and dev command groups when their modules are present."""
    return None
