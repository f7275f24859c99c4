"""The ``kresume-sidecar`` and ``kresume-restore`` container specs (pure builders, dicts out).

Both run the operator's image (or ``policy.sidecar.image``) as ``kresume sidecar`` /
``kresume restore``, read credentials from the policy's Secret via ``envFrom``, get storage
options (sidecar: env ``KRESUME_STORAGE_OPTIONS`` as JSON; restore: ``-o KEY=JSON`` args, the
CLI's own flag), and mount the checkpoint volume at the same path
as the trainer.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from kresume import contract
from kresume.injection import env as envs
from kresume.injection.params import (
    DEFAULT_RESOURCES,
    DEFAULT_TERMINATION_GRACE_SECONDS,
    GRACE_MARGIN_SECONDS,
    Resume,
)
from kresume.policy import Policy


def grace_seconds(pod_spec: dict[str, Any], policy: Policy) -> int:
    """Seconds the sidecar keeps committing after SIGTERM.

    ``policy.sidecar.graceSeconds`` when set, else the pod's ``terminationGracePeriodSeconds``
    T (default 30, core/v1 PodSpec) minus a margin of ``min(GRACE_MARGIN_SECONDS, T // 4)``
    (30 → 25, 10 → 8, 3 → 3, 120 → 115): time left to finish the pointer write and exit before
    SIGKILL (docs/preemption.md). A native sidecar is stopped only after the trainer exited, so its real
    budget may be shorter: it counts its deadline from the trainer's SIGTERM when the trainer's
    preemption hook recorded it (:func:`kresume.sidecar.presence.aligned_deadline`).
    """
    if policy.sidecar.grace_seconds is not None:
        return policy.sidecar.grace_seconds
    tgps = pod_spec.get("terminationGracePeriodSeconds")
    total = max(0, DEFAULT_TERMINATION_GRACE_SECONDS if tgps is None else int(tgps))
    return total - min(GRACE_MARGIN_SECONDS, total // 4)


def security_context(trainer: dict[str, Any], pod_spec: dict[str, Any]) -> dict[str, Any]:
    """Locked-down securityContext that runs as the trainer's uid/gid when the trainer sets one.

    Same uid matters: HF safetensors leaves files mode 0600 (writers.md §4), so a sidecar with
    another uid could not read them. ``runAsNonRoot`` is set unless the effective uid is 0 (the
    kubelet would refuse to start the container); such a pod is not PodSecurity ``restricted`` anyway.
    Everything else the ``restricted`` standard asks of a container is always set
    (kubernetes.io/docs/concepts/security/pod-security-standards, checked on every golden by
    :mod:`kresume.podsecurity`): no privilege escalation, every capability dropped, seccomp
    ``RuntimeDefault``; plus a read-only root filesystem.
    """
    tsc = trainer.get("securityContext") or {}
    psc = pod_spec.get("securityContext") or {}
    sc: dict[str, Any] = {}
    for key in ("runAsUser", "runAsGroup"):
        if key in tsc:
            sc[key] = tsc[key]
    uid = tsc.get("runAsUser", psc.get("runAsUser"))
    sc.update(
        {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    )
    if uid != 0:
        sc["runAsNonRoot"] = True
    return sc


def _storage_env(policy: Policy) -> list[envs.EnvVar]:
    out: list[envs.EnvVar] = []
    if policy.storage_options:
        text = json.dumps(policy.storage_options, sort_keys=True, separators=(",", ":"))
        out.append(envs.value(contract.ENV_STORAGE_OPTIONS, text))
    return out


def resources(policy: Policy, default: dict[str, Any]) -> dict[str, Any]:
    """ResourceRequirements of the sidecar and restore containers: the policy's ``sidecar.resources`` when it sets
    requests or limits (as a whole: mixing it with ``default`` could put a request above a limit, and the API
    server would refuse the pod), else ``default`` (:data:`~kresume.injection.params.DEFAULT_RESOURCES`)."""
    res = policy.sidecar.resources
    own = {k: dict(v) for k, v in (("requests", res.requests), ("limits", res.limits)) if v}
    return own or {k: dict(v) for k, v in default.items() if v}


def _common(policy: Policy, image: str, mount: dict[str, Any], sc: dict[str, Any],
            default_resources: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    c: dict[str, Any] = {"image": policy.sidecar.image or image}
    if policy.sidecar.image_pull_policy:
        c["imagePullPolicy"] = policy.sidecar.image_pull_policy
    if policy.credentials_secret:
        c["envFrom"] = [{"secretRef": {"name": policy.credentials_secret}}]
    res = resources(policy, default_resources)
    if res:
        c["resources"] = res
    c["securityContext"] = copy.deepcopy(sc)
    c["volumeMounts"] = [copy.deepcopy(mount)]
    return c


def sidecar_container(
    *,
    policy: Policy,
    image: str,
    run_url: str,
    watch_dir: str,
    mount: dict[str, Any],
    grace: int,
    security: dict[str, Any],
    native: bool,
    default_resources: dict[str, Any] = DEFAULT_RESOURCES,
    extra: list[envs.EnvVar] | None = None,
) -> dict[str, Any]:
    """The ``kresume-sidecar`` container; ``native`` adds ``restartPolicy: Always`` (K8s ≥ 1.29). ``extra``
    env (the resume checkpoint, rank, world size, epoch, parts mode) goes after the run's own. With the
    policy's ``nodeCache`` it also mounts the node cache and gets ``KRESUME_CACHE_DIR``/``_MAX_BYTES``."""
    env = [
        envs.value(contract.ENV_WATCH, watch_dir),
        envs.value(contract.ENV_RUN_URL, run_url),
        envs.field_ref(contract.ENV_POD_NAME, "metadata.name"),
        envs.field_ref(contract.ENV_POD_NAMESPACE, "metadata.namespace"),
        envs.value(contract.ENV_GRACE_SECONDS, str(grace)),
        envs.value(contract.ENV_CONCURRENCY, str(policy.sidecar.concurrency)),
        envs.value(contract.ENV_KEEP_LAST, str(policy.retention.keep_last)),
    ]
    if policy.retention.keep_every is not None:
        env.append(envs.value(contract.ENV_KEEP_EVERY, str(policy.retention.keep_every)))
    if policy.node_cache.enabled:
        env += [envs.value(contract.ENV_CACHE_DIR, contract.NODE_CACHE_MOUNT),
                envs.value(contract.ENV_CACHE_MAX_BYTES, str(policy.node_cache.max_bytes))]
    env += list(extra or [])
    env += _storage_env(policy)
    env += [e.model_dump(by_alias=True, exclude_none=True) for e in policy.sidecar.extra_env]
    c: dict[str, Any] = {"name": contract.SIDECAR_CONTAINER_NAME}
    c.update(_common(policy, image, mount, security, default_resources))
    _mount_node_cache(c, policy)
    c["command"] = ["kresume", "sidecar"]
    if policy.sidecar.extra_args:
        c["args"] = list(policy.sidecar.extra_args)
    c["env"] = env
    if native:
        c["restartPolicy"] = "Always"
    return _ordered(c)


def restore_container(
    *,
    policy: Policy,
    image: str,
    run_url: str,
    dest_dir: str,
    resume: Resume,
    mount: dict[str, Any],
    security: dict[str, Any],
    default_resources: dict[str, Any] = DEFAULT_RESOURCES,
) -> dict[str, Any]:
    """The ``kresume-restore`` init container: ``kresume restore <run-url> <dir> --checkpoint <id>``.

    Storage options go as ``-o KEY=<JSON>`` (``kresume restore --help``). It copies the resume checkpoint into the checkpoint dir (to ``<dir>/<resume.name>``; the
    store restores under a temp name and renames, so a half restore never looks complete).
    """
    env = [
        envs.field_ref(contract.ENV_POD_NAME, "metadata.name"),
        envs.field_ref(contract.ENV_POD_NAMESPACE, "metadata.namespace"),
    ]
    env += [e.model_dump(by_alias=True, exclude_none=True) for e in policy.sidecar.extra_env]
    c: dict[str, Any] = {"name": contract.RESTORE_CONTAINER_NAME}
    c.update(_common(policy, image, mount, security, default_resources))
    c["command"] = ["kresume", "restore"]
    # Storage options as the CLI's `-o KEY=JSON` (it parses VALUE as JSON when it parses); they
    # are not secret (secrets come from the credentials Secret), so args are fine.
    opts = [
        a
        for key in sorted(policy.storage_options)
        for a in ("-o", f"{key}={json.dumps(policy.storage_options[key], sort_keys=True, separators=(',', ':'))}")
    ]
    result = dest_dir.rstrip("/") + "/" + contract.RESTORE_RESULT
    cache = ["--cache-dir", contract.NODE_CACHE_MOUNT] if policy.node_cache.enabled else []
    c["args"] = [run_url, dest_dir, "--checkpoint", resume.checkpoint, "--no-progress", "--progress-every", "2",
                 *cache, "--result-file", result, *opts]
    c["env"] = env
    _mount_node_cache(c, policy)
    # The outcome (source cache|store, seconds, bytes) becomes the container's termination message, which the
    # operator reads from the pod status (its RBAC needs no pods/log).
    c["terminationMessagePath"] = result
    return _ordered(c)


def _mount_node_cache(c: dict[str, Any], policy: Policy) -> None:
    if policy.node_cache.enabled:
        c["volumeMounts"] = [*c["volumeMounts"], {"name": contract.NODE_CACHE_VOLUME,
                                                  "mountPath": contract.NODE_CACHE_MOUNT}]


def node_cache_volume(policy: Policy) -> dict[str, Any] | None:
    """The ``hostPath`` volume of the node-local tier (``DirectoryOrCreate``), or None when it is off."""
    if not policy.node_cache.enabled:
        return None
    return {"name": contract.NODE_CACHE_VOLUME,
            "hostPath": {"path": policy.node_cache.host_path, "type": "DirectoryOrCreate"}}


_ORDER = (
    "name", "image", "imagePullPolicy", "command", "args", "env", "envFrom", "resources",
    "securityContext", "volumeMounts", "terminationMessagePath", "restartPolicy",
)


def _ordered(c: dict[str, Any]) -> dict[str, Any]:
    """Stable key order (readable goldens; dicts compare equal regardless)."""
    return {k: c[k] for k in _ORDER if k in c}
