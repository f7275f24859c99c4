"""kresume: keep ML training alive across preemption on Kubernetes.

Public API (training side): :func:`resume_from`, :func:`on_preemption` (save on SIGTERM in a plain loop),
:func:`training_finished` (training ended normally: a legacy-mode sidecar under ``restartPolicy: OnFailure`` may leave);
the Lightning callback :class:`kresume.lightning.PreemptionCheckpoint` and the HF Trainer callback
:class:`kresume.hf.PreemptionCallback` import their frameworks, so they live in their own modules.
"""

from __future__ import annotations

__version__ = "0.1.0"

from kresume.preemption import on_preemption, training_finished  # noqa: E402  (re-export: save on SIGTERM, the end)
from kresume.resume import resume_from  # noqa: E402  (re-export: what to resume from)

__all__ = ["on_preemption", "resume_from", "training_finished", "__version__"]
