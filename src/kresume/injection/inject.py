"""``inject``: the pure, idempotent pod mutation of the admission webhook (DESIGN.md, issue 4).

Container order and why:

* native mode (API server ≥ 1.29): ``initContainers = [user init…, kresume-restore, kresume-sidecar]``.
  Init containers start in order; regular containers start only after every init container
  finished (or, for a native sidecar, started). User init containers run first (they may fix
  permissions or be a network sidecar the download needs); the restore completes before the
  sidecar starts, so the sidecar never sees a half-restored checkpoint, and before the trainer.
* legacy mode: ``initContainers = [user init…, kresume-restore]`` and the sidecar appended to
  ``containers`` (older API servers silently drop ``restartPolicy: Always`` on init containers,
  and the pod would hang on a never-ending init container).

User fields are never removed or reordered: kresume's entries are appended (env, mounts,
volumes, containers) or replace an entry of kresume's own reserved name.
"""

from __future__ import annotations

import copy
from typing import Any

from kresume import contract
from kresume.injection import sidecar_spec, volumes
from kresume.injection import env as envs
from kresume.injection.options import parse_options
from kresume.injection.params import DEFAULT_RESOURCES, InjectionError, Injection, Resume
from kresume.policy import Policy, RunNameError
from kresume.policy import run_url as make_run_url

MODE_NATIVE = "native"
MODE_LEGACY = "legacy"


def _put(items: list[dict[str, Any]], item: dict[str, Any], *, before: str | None = None) -> list[dict[str, Any]]:
    """Replace the entry named like ``item`` in place, else insert it before ``before`` or append."""
    out = list(items)
    for i, existing in enumerate(out):
        if existing.get("name") == item["name"]:
            out[i] = item
            return out
    for i, existing in enumerate(out):
        if before is not None and existing.get("name") == before:
            out.insert(i, item)
            return out
    out.append(item)
    return out


def _user_value(pod: dict[str, Any], container: str, name: str) -> str | None:
    """The plain ``value`` the user gave env ``name`` in ``container`` of the input pod, if any."""
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == container:
            for e in c.get("env") or []:
                if e.get("name") == name and isinstance(e.get("value"), str):
                    return str(e["value"])
    return None


def rank_env(ranks: RankEnv | None) -> list[envs.EnvVar]:
    """``KRESUME_RANK``, ``KRESUME_WORLD_SIZE``, ``KRESUME_EPOCH`` of a multi-rank pod ([] otherwise)."""
    if ranks is None:
        return []
    return [envs.value(contract.ENV_RANK, str(ranks.rank)), envs.value(contract.ENV_WORLD_SIZE, str(ranks.world_size)),
            envs.value(contract.ENV_EPOCH, ranks.epoch)]


def trainer_env(
    *, checkpoint_dir: str, run_url: str, resume: Resume | None, restore: bool, ranks: RankEnv | None = None
) -> list[envs.EnvVar]:
    """The env of DESIGN.md "Env injected into training containers", in a fixed order.

    ``KRESUME_RANK``/``_WORLD_SIZE``/``_EPOCH`` for a multi-rank pod; ``KRESUME_RESUME_FROM``/``_STEP`` only when
    there is a checkpoint (absent means fresh start); ``KRESUME_RESUME_PATH`` = ``<checkpoint dir>/<resume.name>``
    only with restore.
    """
    env = [
        envs.value(contract.ENV_CHECKPOINT_DIR, checkpoint_dir),
        envs.value(contract.ENV_RUN_URL, run_url),
        *rank_env(ranks),
    ]
    if resume is not None:
        env.append(envs.value(contract.ENV_RESUME_FROM, resume.url))
        if resume.step is not None:
            env.append(envs.value(contract.ENV_RESUME_STEP, str(resume.step)))
        if restore:
            path = checkpoint_dir.rstrip("/") + "/" + resume.name
            env.append(envs.value(contract.ENV_RESUME_PATH, path))
    return env


def sidecar_env(pod: dict[str, Any], resume: Resume | None, ranks: RankEnv | None, parts: str | None
                ) -> list[envs.EnvVar]:
    """The sidecar's share of the pod's resume and rank env: ``KRESUME_RESUME_FROM`` (so it can pin what its pod
    resumed from; the user's own value when the trainer's env pins one), the rank env, ``KRESUME_PARTS``."""
    out: list[envs.EnvVar] = []
    first = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name") or ""
    pinned = _user_value(pod, first, contract.ENV_RESUME_FROM)
    if pinned is not None or resume is not None:
        out.append(envs.value(contract.ENV_RESUME_FROM, pinned if pinned is not None else resume.url))  # type: ignore[union-attr]
    out += rank_env(ranks)
    if parts is not None:
        out.append(envs.value(contract.ENV_PARTS, parts))
    return out


def legacy_env(pod_spec: dict[str, Any] | None, *, native: bool) -> list[envs.EnvVar]:
    """Legacy mode only, so that the sidecar, a regular container the kubelet never stops, leaves once the
    trainer will not run again (:mod:`kresume.sidecar.leaving`): ``KRESUME_POD_UID`` (downward API
    ``metadata.uid``: the trainer writes it in its lock, the sidecar knows its pod's trainer by it) and, with
    ``pod_spec`` (the sidecar's env), ``KRESUME_RESTART_POLICY`` = the pod's ``restartPolicy`` (core/v1 default
    ``Always``). Native mode: [] (the kubelet stops a native sidecar after the trainer)."""
    if native:
        return []
    out = [envs.field_ref(contract.ENV_POD_UID, "metadata.uid")]
    if pod_spec is not None:
        out.append(envs.value(contract.ENV_RESTART_POLICY, str(pod_spec.get("restartPolicy") or "Always")))
    return out


def inject(
    pod: dict[str, Any],
    policy: Policy,
    resume: Resume | None,
    *,
    run: str,
    namespace: str,
    native_sidecar: bool,
    image: str,
    resolve_error: str | None = None,
    default_resources: dict[str, Any] | None = None,
    ranks: RankEnv | None = None,
) -> Injection:
    """Return a new pod with kresume's sidecar, volume, env, restore step and annotations.

    Parameters
    ----------
    pod : dict
        core/v1 Pod as in the AdmissionReview (``metadata.name`` may be absent). Not modified.
    policy : Policy
        The pod's ``CheckpointPolicy`` spec.
    resume : Resume or None
        The newest committed checkpoint of the run; ``None`` for a fresh start.
    run, namespace : str
        The run (:func:`kresume.identity.run_identity`) and the pod's namespace (from the
        AdmissionReview request); the run URL is ``<policy.storage>/<namespace>/<run>/``.
    native_sidecar : bool
        True: sidecar as an init container with ``restartPolicy: Always`` (API server ≥ 1.29).
    image : str
        The operator's image, used unless ``policy.sidecar.image`` is set.
    resolve_error : str, optional
        Why resolution fell back (timeout, error); written to ``kresume.dev/resolve-error``.
    ranks : RankEnv, optional
        A multi-rank pod's rank, world size and resume epoch: env of the trainers and the sidecar, and the
        ``kresume.dev/epoch`` annotation.
    default_resources : dict, optional
        core/v1 ResourceRequirements of the sidecar and restore containers when the policy sets none
        (the operator's ``--sidecar-resources``); None: :data:`~kresume.injection.params.DEFAULT_RESOURCES`.

    Returns
    -------
    Injection
        The new pod and Warning-event lines. A pod that already carries ``kresume.dev/injected``
        is returned as an equal copy with ``changed=False`` (idempotent; the webhook may be
        re-invoked). Deterministic: no timestamps or random values.

    Raises
    ------
    InjectionError
        Unsafe run/namespace (``reason="InvalidRun"``) or invalid ``kresume.dev/*`` annotation;
        the message names it. The webhook then admits the pod unchanged with a Warning event.
    """
    meta_in = pod.get("metadata") or {}
    try:
        url = make_run_url(policy, namespace, run)
    except RunNameError as exc:
        raise InjectionError("InvalidRun", str(exc)) from None
    if contract.ANN_INJECTED in (meta_in.get("annotations") or {}):
        return Injection(copy.deepcopy(pod), (), url, changed=False)

    opts = parse_options(pod, policy_restore=policy.restore or policy.node_cache.enabled)
    out = copy.deepcopy(pod)
    spec = out.setdefault("spec", {})
    plan = volumes.plan_volume(spec, opts)
    ckpt_dir = volumes.checkpoint_dir(plan, opts)
    restoring = opts.restore and resume is not None
    wanted = trainer_env(checkpoint_dir=ckpt_dir, run_url=url, resume=resume, restore=restoring, ranks=ranks)
    wanted += legacy_env(None, native=native_sidecar)

    warnings: list[str] = []
    containers: list[dict[str, Any]] = []
    first_trainer: dict[str, Any] | None = None
    for c in spec.get("containers") or []:
        if c.get("name") in opts.containers:
            c, warn = volumes.ensure_mount(c, plan)
            warnings += [warn] if warn else []
            c, warns = envs.ensure_env(c, wanted)
            warnings += warns
            first_trainer = first_trainer or c
        containers.append(c)
    assert first_trainer is not None  # parse_options guarantees one selected container
    security = sidecar_spec.security_context(first_trainer, spec)

    sidecar = sidecar_spec.sidecar_container(
        policy=policy,
        image=image,
        run_url=url,
        watch_dir=ckpt_dir,
        mount=plan.mount,
        grace=sidecar_spec.grace_seconds(spec, policy),
        security=security,
        native=native_sidecar,
        default_resources=DEFAULT_RESOURCES if default_resources is None else default_resources,
        extra=sidecar_env(pod, resume, ranks, opts.parts) + legacy_env(spec, native=native_sidecar),
    )
    inits = list(spec.get("initContainers") or [])
    if native_sidecar:
        inits = _put(inits, sidecar)
    else:
        containers = _put(containers, sidecar)
    if restoring:
        assert resume is not None
        restore = sidecar_spec.restore_container(
            policy=policy,
            image=image,
            run_url=url,
            dest_dir=ckpt_dir,
            resume=resume,
            mount=plan.mount,
            security=security,
            default_resources=DEFAULT_RESOURCES if default_resources is None else default_resources,
        )
        inits = _put(inits, restore, before=contract.SIDECAR_CONTAINER_NAME)
    if inits:
        spec["initContainers"] = inits
    spec["containers"] = containers
    vols = volumes.ensure_volume(spec.get("volumes"), plan)
    cache_volume = sidecar_spec.node_cache_volume(policy)
    if cache_volume is not None:
        vols = _put(vols or [], cache_volume)
    if vols:
        spec["volumes"] = vols

    meta = out.setdefault("metadata", {})
    ann = dict(meta.get("annotations") or {})
    pinned = _user_value(pod, opts.containers[0], contract.ENV_RESUME_FROM)
    if pinned is not None:  # the user's own KRESUME_RESUME_FROM is what the trainer will read
        ann[contract.ANN_RESUMED_FROM] = pinned
    else:
        ann[contract.ANN_RESUMED_FROM] = resume.url if resume is not None else "none"
        if resume is not None and resume.step is not None:
            ann[contract.ANN_RESUMED_STEP] = str(resume.step)
    if resolve_error:
        ann[contract.ANN_RESOLVE_ERROR] = resolve_error
    if ranks is not None:
        ann[contract.ANN_EPOCH] = ranks.epoch
    ann[contract.ANN_INJECTED] = MODE_NATIVE if native_sidecar else MODE_LEGACY
    meta["annotations"] = ann
    return Injection(out, tuple(warnings), url, changed=True)
