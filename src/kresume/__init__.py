"""kresume: keep ML training alive across preemption on Kubernetes.

Public API (training side): :func:`resume_from`, :func:`on_preemption` (save on SIGTERM in a plain loop),
:func:`training_finished` (training ended normally: a legacy-mode sidecar under ``restartPolicy: OnFailure`` may leave);
the Lightning callback :class:`kresume.lightning.PreemptionCheckpoint` and the HF Trainer callback
:class:`kresume.hf.PreemptionCallback` import their frameworks, so they live in their own modules.

The three names are imported on first use (PEP 562 module ``__getattr__``): every ``kresume`` command imports
this package first, and a one-shot ``kresume restore`` needs neither the signal hooks nor the resume logic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["on_preemption", "resume_from", "training_finished", "__version__"]

#: Public name → the module that defines it (re-exported here).
_LAZY = {"on_preemption": "kresume.preemption", "training_finished": "kresume.preemption",
         "resume_from": "kresume.resume"}

if TYPE_CHECKING:
    from kresume.preemption import on_preemption, training_finished
    from kresume.resume import resume_from


def __getattr__(name: str) -> Any:
    """``kresume.resume_from`` and friends, imported from their module on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kresume' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
