"""Pure pod injection for the admission webhook (split by concern, gcs-fuse-csi-driver style).

``options`` parses the pod's ``kresume.dev/*`` annotations, ``volumes`` picks and mounts the
checkpoint volume, ``env`` merges env (user wins), ``sidecar_spec`` builds the sidecar and
restore containers, ``inject`` composes them, ``patches`` turns the result into a JSON patch or a
kopf ``patch.fns`` function. Nothing here does I/O.
"""

from __future__ import annotations

from kresume.injection.inject import MODE_LEGACY, MODE_NATIVE, inject, trainer_env
from kresume.injection.options import PodOptions, parse_options
from kresume.injection.params import (
    DEFAULT_RESOURCES,
    GRACE_MARGIN_SECONDS,
    Injection,
    InjectionError,
    RankEnv,
    Resume,
)
from kresume.injection.patches import json_patch, replace_body

__all__ = [
    "DEFAULT_RESOURCES",
    "GRACE_MARGIN_SECONDS",
    "Injection",
    "InjectionError",
    "MODE_LEGACY",
    "MODE_NATIVE",
    "PodOptions",
    "RankEnv",
    "Resume",
    "inject",
    "json_patch",
    "parse_options",
    "replace_body",
    "trainer_env",
]
