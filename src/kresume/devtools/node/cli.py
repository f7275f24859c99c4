"""``kresume dev node``: run the local node agent until Ctrl-C / SIGTERM.

Mount in the main CLI with ``dev_app.command("node")(kresume.devtools.node.cli.command)`` under a ``dev``
typer group; standalone it is ``python -m kresume.devtools.node``.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Optional

import typer


def command(
    name: str = typer.Option("kresume-dev-node", "--name", help="Node name to register."),
    namespace: Optional[list[str]] = typer.Option(
        None, "--namespace", "-n", help="Bind unassigned pods only in this namespace (repeatable; default: all)."),
    kubeconfig: Optional[Path] = typer.Option(None, "--kubeconfig", envvar="KUBECONFIG",
                                              help="kubeconfig of the cluster (default: $KUBECONFIG)."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Parent of pod sandboxes (default: a temp dir)."),
    log_dir: Optional[Path] = typer.Option(None, "--log-dir", help="Container logs (default: <work-dir>/logs)."),
) -> None:
    """A development node: registers a Node, binds pending pods, runs their containers as local processes.

    Images are ignored (containers run from their command/args with this venv's bin first on PATH); pods
    share the host network; emptyDir volumes are temp folders bind-mounted at their mountPath in a private
    mount namespace (needs root). Not for production.
    """
    import kubernetes.config

    from kresume.devtools.node.agent import NodeAgent, NodeSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    api = kubernetes.config.new_client_from_config(str(kubeconfig) if kubeconfig else None)
    settings = NodeSettings(node_name=name, namespaces=tuple(namespace or ()), work_dir=work_dir, log_dir=log_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with NodeAgent(api, settings):
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


app = typer.Typer(add_completion=False, help="kresume dev node")
app.command()(command)


def main() -> None:
    """Entry point of ``python -m kresume.devtools.node``."""
    app()
