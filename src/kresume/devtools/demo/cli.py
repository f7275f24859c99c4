"""``kresume demo``: the command over :func:`kresume.devtools.demo.run.run_demo`.

Mount in the main CLI with ``app.command("demo")(kresume.devtools.demo.cli.command)``; standalone it is
``python -m kresume.devtools.demo``. Exit codes: 0 every check passed, 1 a check failed or the run did not
finish, 2 bad usage, 3 the demo could not start (message names the piece and its log), 130 Ctrl-C.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def command(
    preemptions: int = typer.Option(2, "--preemptions", "-p", min=0,
                                    help="Preemptions to inject (modes cycle: during a step, during a checkpoint "
                                         "write, during an upload, SIGKILL without grace; see --modes)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the preemption plan (modes and moments)."),
    store: Optional[str] = typer.Option(None, "--store",
                                        help="Store base URL (any fsspec URL; file:///path needs no server). "
                                             "Default: a local SeaweedFS S3 server."),
    store_option: Optional[list[str]] = typer.Option(None, "--store-option", "-o",
                                                     help="fsspec storage option KEY=JSON for --store (repeatable)."),
    max_steps: int = typer.Option(0, "--max-steps", help="Planned training steps (default: 120 + 60 per preemption, "
                                                         "at least 240)."),
    every_n_steps: int = typer.Option(20, "--every-n-steps", help="Checkpoint every N steps."),
    step_seconds: float = typer.Option(0.1, "--step-seconds", help="Sleep per training step, seconds."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Logs and results (default: .cache/demo/<time>)."),
    json_out: Optional[Path] = typer.Option(None, "--json-out", help="Write the result as JSON to this file."),
    timeout: float = typer.Option(900.0, "--timeout", help="Fail when the Job has not finished after this long, s."),
    modes: str = typer.Option("step,write,upload,kill", "--modes",
                              help="Preemption modes to cycle through (comma list of step, write, upload, kill); "
                                   "e.g. step,write,upload for graceful preemptions only."),
    hidden: int = typer.Option(64, "--hidden", help="Hidden units of the example model (checkpoint ~136 B per unit; "
                                                    "524288 gives 71 MB)."),
    grace: int = typer.Option(15, "--grace", help="The Job's terminationGracePeriodSeconds (the sidecar's grace "
                                                  "period is derived from it: T - min(5, T // 4))."),
    ranks: int = typer.Option(1, "--ranks", min=1,
                              help="Ranks (pods) of the run. 1: a Lightning Job. More: a StatefulSet of that many "
                                   "pods running a torch.distributed (gloo) trainer that saves with dcp.save into "
                                   "each pod's own folder; one rank is preempted at a time and the whole job "
                                   "restarts (node agent only)."),
    master_port: int = typer.Option(29531, "--master-port",
                                    help="Port of rank 0's rendezvous TCPStore on 127.0.0.1 (--ranks > 1)."),
    node: str = typer.Option("auto", "--node", help="Where the pods run: kubelet (a real node: containerd + kubelet, "
                                                     "images built locally; root), agent (the node agent: local "
                                                     "processes, images ignored), auto (kubelet when possible)."),
) -> None:
    """Run a real Lightning Job on a local control plane, preempt it, and watch it resume by itself.

    Starts etcd + kube-apiserver + kube-controller-manager, an object store, the kresume operator (webhook) and a
    node: a real one (containerd + kubelet, images built from the Dockerfiles, the chart installed with helm test)
    where root and the node assets allow, else the node agent (containers as local processes; --node picks).
    Submits a batch/v1 Job with the kresume.dev/inject label (--ranks N: a StatefulSet of N DCP ranks), preempts
    its pods at random moments and checks that every restart resumed from the newest committed checkpoint.
    Ctrl-C stops everything.
    """
    from kresume.devtools.demo.report import Display, summary
    from kresume.devtools.demo.run import run_demo
    from kresume.devtools.demo.settings import DemoSettings

    from kresume.devtools.demo import chaos, interrupt

    if node not in ("auto", "kubelet", "agent"):
        raise typer.BadParameter(f"{node!r}: choose auto, kubelet or agent", param_hint="--node")
    mode_list = tuple(m.strip() for m in modes.split(",") if m.strip())
    try:
        chaos.plan(1, 0, 2, mode_list)
    except ValueError as exc:
        raise typer.BadParameter(str(exc).removeprefix("--modes: "), param_hint="--modes") from None
    options = {}
    for item in store_option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--store-option {item!r}: use KEY=JSON", param_hint="--store-option")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    settings = DemoSettings(preemptions=preemptions, seed=seed, store=store, store_options=options,
                            max_steps=max_steps, every_n_steps=every_n_steps, step_seconds=step_seconds,
                            work_dir=work_dir, json_out=json_out, timeout=timeout, grace_seconds=grace, hidden=hidden,
                            modes=mode_list, node=node, ranks=ranks, master_port=master_port)  # fmt: skip
    interrupt.install()
    display = Display()
    try:
        with display:
            result = run_demo(settings, display)
    except KeyboardInterrupt:
        display.console.print("interrupted: everything the demo started has been stopped")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - one line with the cause; the logs have the rest
        display.console.print(f"kresume demo: could not run: {type(exc).__name__}: {exc}", markup=False)
        raise typer.Exit(3) from None
    result["namespace"] = settings.namespace
    text = json.dumps(result, indent=2, default=str)
    Path(result["work_dir"], "result.json").write_text(text)
    if json_out:
        json_out.write_text(text)
    summary(result, display.console)
    raise typer.Exit(0 if result["ok"] else 1)


app = typer.Typer(add_completion=False, help="kresume demo")
app.command()(command)


def main() -> None:
    """Entry point of ``python -m kresume.devtools.demo``."""
    app()
