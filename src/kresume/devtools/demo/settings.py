"""Settings of ``kresume demo`` (one frozen dataclass; units in each field's docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[4]
TRAIN_SCRIPT = REPO / "examples" / "lightning" / "train.py"
DCP_TRAIN_SCRIPT = REPO / "examples" / "dcp" / "train.py"


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs. Times are seconds, steps are optimizer steps of the example trainer."""

    preemptions: int = 2
    """Preemptions to inject (chaos: modes cycle through checkpoint write, upload, SIGKILL)."""
    seed: int = 0
    """Seed of the preemption plan (modes, moments)."""
    store: str | None = None
    """Store base URL (any fsspec URL, e.g. ``file:///tmp/ckpts``); None starts SeaweedFS and uses
    ``s3://kresume-demo/runs``."""
    store_options: dict[str, Any] = field(default_factory=dict)
    """fsspec storage options for ``store`` (ignored for the default SeaweedFS, which sets its own)."""
    max_steps: int = 0
    """Planned steps of the run; 0: ``120 + 60 * preemptions`` (at least 240)."""
    every_n_steps: int = 20
    """Checkpoint period of the trainer's ModelCheckpoint, steps."""
    step_seconds: float = 0.1
    """Sleep after each training step (so there is something to watch)."""
    grace_seconds: int = 15
    """The Job pod's ``terminationGracePeriodSeconds``; the sidecar's grace period is derived from it by the
    webhook (T − min(5, T // 4): 15 → 12 s, docs/preemption.md) unless ``sidecar_grace_seconds`` is set."""
    sidecar_grace_seconds: int | None = None
    """The policy's ``sidecar.graceSeconds`` (seconds the sidecar keeps committing after SIGTERM); None: derived."""
    modes: tuple[str, ...] = ("step", "write", "upload", "kill")
    """Preemption modes to cycle through (:data:`kresume.devtools.demo.chaos.MODES`)."""
    hidden: int = 64
    """Hidden units of the example model (its checkpoint is about 136 B per unit + 5 KiB)."""
    expect_zero_loss: bool = True
    """Check issue 15's rule: 0 lost steps after a graceful preemption, ≤ one interval after SIGKILL. Off when
    the grace period is made too short on purpose."""
    namespace: str = "kresume-demo"
    job_name: str = "demo-train"
    work_dir: Path | None = None
    """Where logs (control plane, store, operator, node, containers) and the JSON result go; None:
    ``<repo>/.cache/demo/<timestamp>``."""
    json_out: Path | None = None
    """Also write the result JSON here."""
    timeout: float = 900.0
    """Give up (and fail) after this long from the Job's submission."""
    first_preemption_after: int = 2
    """Committed checkpoints required before the first preemption."""
    node: str = "auto"
    """Where the Job's pods run: ``kubelet`` (a real node: containerd + kubelet v1.20, images built locally;
    needs root and ``scripts/k8s-assets.sh --node``), ``agent`` (the node agent: containers as local processes,
    images ignored) or ``auto`` (``kubelet`` when this machine can run it, else ``agent``, saying why)."""
    trainer_command: tuple[str, ...] = ()
    """The trainer container's ``command``; empty: ``python examples/lightning/train.py`` (tests give a broken one
    to check that a container that cannot start is reported at once)."""

    ranks: int = 1
    """Ranks (pods) of the run. 1: the Lightning Job above. More: a StatefulSet of ``ranks`` pods running
    ``examples/dcp/train.py`` (torch.distributed over gloo, ``dcp.save`` into each pod's own emptyDir); the
    operator derives rank = ordinal, world size = replicas (:mod:`kresume.devtools.demo.ranks`)."""
    master_port: int = 29531
    """TCP port of rank 0's rendezvous ``TCPStore`` on 127.0.0.1 (node agent pods share the host network)."""
    collective_timeout: float = 20.0
    """Seconds a gloo collective waits for a dead peer before the surviving rank fails (``--timeout``)."""
    settle_seconds: float = 1.0
    """The sidecar's settle window in the multi-rank demo (``KRESUME_SETTLE_SECONDS``; default 10 s): a DCP
    shard has no footer, so a rank without ``.metadata`` judges it complete after this quiet time. The demo's
    shards are written in milliseconds; a real trainer writing GBs keeps the default."""

    @property
    def planned_steps(self) -> int:
        """``max_steps`` or its default."""
        return self.max_steps or max(240, 120 + 60 * self.preemptions)
