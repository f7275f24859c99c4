"""Run identity: which run a training pod belongs to, and its rank in it (issue 14 item 1).

Pure: :func:`run_identity` reads the pod dict the webhook receives; :func:`ranks` also takes the facts of the
pod's controller (:class:`OwnerFacts`, read through the API by the shell and cached), because a pod does not
carry its Job's ``completions``/``parallelism`` or its StatefulSet's ``replicas``.

**Run name** (first rule that matches wins; DESIGN.md "Pod API"). All ranks of one job share one run, so one
run URL: every completion index of an Indexed Job, every replica of a PyTorchJob, every pod of a StatefulSet.

=====================  =============================================================  ===================
source                 read from                                                      run name
=====================  =============================================================  ===================
annotation             ``kresume.dev/run``                                             its value
jobset                 label ``jobset.sigs.k8s.io/jobset-name``                        the JobSet's name
pytorchjob             labels ``training.kubeflow.org/job-name`` (+ ``replica-type``,  the job's name
                       ``replica-index``), or the older ``job-name`` + ``replica-type``
                       + ``replica-index`` of the Kubeflow training-operator
job                    label ``batch.kubernetes.io/job-name`` or ``job-name``, or an   the Job's name
                       ownerReference of kind Job
statefulset            ownerReference of kind StatefulSet                              the StatefulSet's name
=====================  =============================================================  ===================

**Rank and world size** (:func:`ranks`; first that applies):

1. annotations ``kresume.dev/rank`` and ``kresume.dev/world-size`` (both; 0 ≤ rank < world): torchrun pods,
   LeaderWorkerSet, bare pods, anything else;
2. JobSet: rank = ``job-global-index`` × P + completion index, world = ``global-replicas`` × P, where P is the
   pod's Job's ``parallelism`` (owner facts); JobSets older than the global labels: ``job-index`` and
   ``replicatedjob-replicas``. Replicated jobs of different sizes need the annotations (a pod cannot see the
   other replicated jobs' sizes);
3. Kubeflow PyTorchJob/TrainJob: the ``RANK``/``WORLD_SIZE`` (or ``PET_NODE_RANK``/``PET_NNODES``) env the
   training-operator sets on the containers;
4. Indexed Job: rank = completion index (``batch.kubernetes.io/job-completion-index``), world = ``completions``;
5. StatefulSet: rank = the ordinal of the pod's name, world = ``spec.replicas``;
6. a Job with ``parallelism`` ≤ 1, or a bare pod: a single writer (no rank).

A pod whose rank cannot be known in a job of several pods — a non-indexed Job with ``parallelism`` > 1, a
PyTorchJob replica without the env, a controller whose facts could not be read — is an :class:`IdentityError`
(``NoRank``): the webhook admits it without kresume and a Warning names the fix, rather than letting several
writers share one run. Every name is checked with :func:`kresume.policy.check_run_name`; an unsafe value is an
error, never rewritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kresume import contract
from kresume.policy import RunNameError, check_run_name

#: Kinds of identity sources, as reported in :attr:`RunIdentity.source`.
SOURCES = ("annotation", "jobset", "pytorchjob", "job", "statefulset")


@dataclass(frozen=True)
class RunIdentity:
    """A pod's run.

    run : str — the run name (DNS-1123 subdomain, ≤ 253 chars); the run URL is
        ``<policy.storage>/<namespace>/<run>/``.
    source : str — which rule named it, one of :data:`SOURCES`.
    group : str or None — the enclosing job (JobSet, PyTorchJob, Job, StatefulSet); ``None`` for the annotation.
    controller : (kind, name) or None — the pod's Job or StatefulSet, whose facts :func:`ranks` needs.
    """

    run: str
    source: str
    group: str | None = None
    controller: tuple[str, str] | None = None


@dataclass(frozen=True)
class Ranks:
    """A pod's place in a multi-rank run: ``rank`` in ``0..world_size-1``; ``source`` says which rule gave it."""

    rank: int
    world_size: int
    source: str


@dataclass(frozen=True)
class OwnerFacts:
    """What the API says about a pod's controller (read by the shell).

    kind, name : str — ``Job`` or ``StatefulSet`` and its name.
    completions, parallelism : int or None — a Job's ``spec.completions`` / ``spec.parallelism``.
    indexed : bool — a Job with ``completionMode: Indexed``.
    replicas : int or None — a StatefulSet's ``spec.replicas`` (default 1).
    """

    kind: str
    name: str
    completions: int | None = None
    parallelism: int | None = None
    indexed: bool = False
    replicas: int | None = None

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> OwnerFacts:
        """From a batch/v1 Job or apps/v1 StatefulSet object (camelCase dict); absent fields take their API
        defaults (Job parallelism 1, StatefulSet replicas 1)."""
        spec = obj.get("spec") or {}
        kind = str(obj.get("kind") or "")
        name = str((obj.get("metadata") or {}).get("name") or "")
        if kind == "StatefulSet":
            return cls(kind, name, replicas=int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1))
        return cls(kind, name, completions=spec.get("completions"),
                   parallelism=int(spec["parallelism"]) if spec.get("parallelism") is not None else 1,
                   indexed=spec.get("completionMode") == "Indexed")


@dataclass(frozen=True)
class IdentityError:
    """Why a pod has no run. ``reason`` is a CamelCase word for an Event; ``message`` the text."""

    reason: str
    message: str


def _meta(pod: dict[str, Any]) -> tuple[dict[str, str], dict[str, str], list[dict[str, Any]]]:
    meta = pod.get("metadata") or {}
    return (
        dict(meta.get("labels") or {}),
        dict(meta.get("annotations") or {}),
        list(meta.get("ownerReferences") or []),
    )


def _owner(owners: list[dict[str, Any]], kind: str) -> str | None:
    """Name of the controlling owner of ``kind`` (or, failing that, any owner of that kind)."""
    matches = [o for o in owners if o.get("kind") == kind and o.get("name")]
    for o in matches:
        if o.get("controller"):
            return str(o["name"])
    return str(matches[0]["name"]) if matches else None


def _index(value: Any, what: str) -> int | None:
    if value is None or value == "":
        return None
    if not re.fullmatch(r"[0-9]{1,9}", str(value)):
        raise RunNameError(f"{what}: {value!r} is not a non-negative integer")
    return int(value)


def _completion_index(labels: dict[str, str], annotations: dict[str, str]) -> int | None:
    raw = annotations.get(contract.K8S_COMPLETION_INDEX, labels.get(contract.K8S_COMPLETION_INDEX))
    return _index(raw, contract.K8S_COMPLETION_INDEX)


def _job_name(labels: dict[str, str], owners: list[dict[str, Any]]) -> str | None:
    return labels.get(contract.K8S_JOB_NAME_LABEL) or labels.get(contract.K8S_LEGACY_JOB_NAME_LABEL) or \
        _owner(owners, "Job")


def _kubeflow(labels: dict[str, str]) -> str | None:
    """The Kubeflow job name: the ``training.kubeflow.org/`` labels, or the training-operator's older
    ``job-name`` + ``replica-type`` + ``replica-index`` (which the Job rule would otherwise take for a Job)."""
    name = labels.get(contract.KUBEFLOW_JOB_NAME_LABEL)
    if name:
        return name
    old = labels.get(contract.K8S_LEGACY_JOB_NAME_LABEL)
    if old and contract.KUBEFLOW_OLD_REPLICA_TYPE_LABEL in labels and contract.KUBEFLOW_OLD_REPLICA_INDEX_LABEL in labels:
        return old
    return None


def run_identity(pod: dict[str, Any]) -> RunIdentity | IdentityError:
    """Derive the run of ``pod`` (a core/v1 Pod as a dict, as in an AdmissionReview).

    Returns
    -------
    RunIdentity
        When a rule of the module's table matches and gives a safe name.
    IdentityError
        ``reason="NoRun"`` when no rule matches (a bare pod without ``kresume.dev/run``);
        ``reason="InvalidRun"`` when the matching rule's value is unsafe (``/``, ``..``, a
        scheme, upper case, over 253 characters). Never raises.
    """
    try:
        return _derive(pod)
    except RunNameError as exc:
        return IdentityError("InvalidRun", str(exc))


def _derive(pod: dict[str, Any]) -> RunIdentity | IdentityError:
    labels, annotations, owners = _meta(pod)
    job = _job_name(labels, owners)
    sts = _owner(owners, "StatefulSet")
    controller = ("Job", job) if job else ("StatefulSet", sts) if sts else None

    explicit = annotations.get(contract.ANN_RUN)
    if explicit is not None:
        run = check_run_name(explicit, field=f"annotation {contract.ANN_RUN}")
        return RunIdentity(run=run, source="annotation", controller=controller)
    jobset = labels.get(contract.JOBSET_NAME_LABEL)
    if jobset:
        return RunIdentity(check_run_name(jobset, field="JobSet name"), "jobset", jobset, controller)
    kf_job = _kubeflow(labels)
    if kf_job:
        return RunIdentity(check_run_name(kf_job, field="PyTorchJob name"), "pytorchjob", kf_job, None)
    if job:
        return RunIdentity(check_run_name(job, field="Job name"), "job", job, controller)
    if sts:
        return RunIdentity(check_run_name(sts, field="StatefulSet name"), "statefulset", sts, controller)
    return IdentityError(
        "NoRun",
        f"no run: the pod has no {contract.ANN_RUN} annotation and no Job, JobSet, StatefulSet or "
        "PyTorchJob owner; add the annotation to give it a run",
    )


_FIX = (f"set annotations {contract.ANN_RANK} and {contract.ANN_WORLD_SIZE} on each pod (or use an Indexed Job, "
        "a StatefulSet or a JobSet, whose pods carry their index)")


def _no_rank(message: str) -> IdentityError:
    return IdentityError("NoRank", f"{message}: several pods would share one run; {_FIX}; pod admitted without "
                                   "kresume")


def _pair(rank: int | None, world: int | None, where: str) -> Ranks | IdentityError | None:
    if rank is None and world is None:
        return None
    if rank is None or world is None or world < 1 or rank >= world:
        return IdentityError("InvalidRank", f"{where}: rank {rank} and world size {world} must be given together, "
                                            "with 0 <= rank < world size; pod admitted without kresume")
    return Ranks(rank, world, where)


def _env_int(pod: dict[str, Any], *names: str) -> int | None:
    """The first numeric plain ``value`` of env ``names`` on the pod's containers (in order)."""
    for name in names:
        for c in (pod.get("spec") or {}).get("containers") or []:
            for e in c.get("env") or []:
                if e.get("name") == name and re.fullmatch(r"[0-9]{1,9}", str(e.get("value") or "")):
                    return int(e["value"])
    return None


def ranks(pod: dict[str, Any], ident: RunIdentity, owner: OwnerFacts | None) -> Ranks | IdentityError | None:
    """The pod's rank and world size by the module's rules, or None for a single writer.

    ``owner`` are the facts of ``ident.controller`` (None when the pod has none, or they could not be read).
    Never raises; an unknowable rank in a job of several pods is ``IdentityError("NoRank")``.
    """
    try:
        return _ranks(pod, ident, owner)
    except RunNameError as exc:
        return IdentityError("InvalidRank", f"{exc}; pod admitted without kresume")


def _ranks(pod: dict[str, Any], ident: RunIdentity, owner: OwnerFacts | None) -> Ranks | IdentityError | None:
    labels, annotations, _ = _meta(pod)
    explicit = _pair(_index(annotations.get(contract.ANN_RANK), contract.ANN_RANK),
                     _index(annotations.get(contract.ANN_WORLD_SIZE), contract.ANN_WORLD_SIZE), "annotations")
    if explicit is not None:
        return explicit
    ci = _completion_index(labels, annotations)
    job = owner if owner is not None and owner.kind == "Job" else None

    if labels.get(contract.JOBSET_NAME_LABEL):
        index = _index(labels.get(contract.JOBSET_JOB_GLOBAL_INDEX_LABEL, labels.get(contract.JOBSET_JOB_INDEX_LABEL)),
                       contract.JOBSET_JOB_GLOBAL_INDEX_LABEL)
        total = _index(labels.get(contract.JOBSET_GLOBAL_REPLICAS_LABEL,
                                  labels.get(contract.JOBSET_REPLICATED_JOB_REPLICAS_LABEL)),
                       contract.JOBSET_GLOBAL_REPLICAS_LABEL)
        if index is None or total is None or job is None:
            return _no_rank(f"JobSet {labels[contract.JOBSET_NAME_LABEL]!r}: its job index, replica count or its "
                            "Job's parallelism is unknown")
        per_job = max(1, job.parallelism or 1)
        return _pair(index * per_job + (ci or 0), total * per_job, "jobset")

    if ident.source == "pytorchjob":
        found = _pair(_env_int(pod, "RANK", "PET_NODE_RANK"), _env_int(pod, "WORLD_SIZE", "PET_NNODES"), "env")
        return found if found is not None else _no_rank(f"Kubeflow job {ident.group!r}: no RANK/WORLD_SIZE env")

    if ident.controller and ident.controller[0] == "Job":
        if job is None:
            return _no_rank(f"Job {ident.controller[1]!r} could not be read") if ci is not None else None
        if job.indexed or ci is not None:
            return _pair(ci, job.completions, "indexed-job")
        if (job.parallelism or 1) > 1:
            return _no_rank(f"Job {job.name!r} has parallelism {job.parallelism} and is not Indexed, so its pods have "
                            "no rank (use completionMode: Indexed, or parallelism 1)")
        return None

    if ident.controller and ident.controller[0] == "StatefulSet":
        name = str((pod.get("metadata") or {}).get("name") or labels.get(contract.K8S_STATEFULSET_POD_NAME_LABEL) or "")
        ordinal = name.rsplit("-", 1)[-1]
        if not ordinal.isdigit():
            return _no_rank(f"StatefulSet {ident.controller[1]!r} pod {name!r} has no ordinal")
        if owner is None or owner.kind != "StatefulSet" or owner.replicas is None:
            return _no_rank(f"StatefulSet {ident.controller[1]!r} could not be read")
        return _pair(int(ordinal), owner.replicas, "statefulset")
    return None
