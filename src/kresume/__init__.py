"""kresume: keep ML training alive across preemption on Kubernetes.

Public API (training side): :func:`resume_from`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from kresume.resume import resume_from  # noqa: E402  (re-export, the one public training-side call)

__all__ = ["resume_from", "__version__"]
