"""Run identity: which run a training pod belongs to, stable across the pod being recreated.

Pure: reads only the pod dict the webhook receives. At admission (CREATE) pods made by
controllers usually have ``generateName`` and no ``name`` yet, so the pod name is used only for
StatefulSet pods, whose controller sets a stable name (``web-0``) before creating them.

Scheme (first rule that matches wins; DESIGN.md "Pod API"):

=====================  ==========================================================  ================
source                 read from                                                   run name
=====================  ==========================================================  ================
annotation             ``kresume.dev/run``                                          its value
JobSet                 labels ``jobset.sigs.k8s.io/jobset-name``,                   ``<js>-<rj>-<ji>[-<ci>]``
                       ``…/replicatedjob-name``, ``…/job-index`` + completion index
PyTorchJob (Kubeflow)  labels ``training.kubeflow.org/job-name``, ``…/replica-type``,   ``<job>-<type>-<i>``
                       ``…/replica-index``
Job / Indexed Job      label ``batch.kubernetes.io/job-name`` or ``job-name``, or an    ``<job>[-<ci>]``
                       ownerReference of kind Job; completion index from the
                       annotation/label ``batch.kubernetes.io/job-completion-index``
StatefulSet            ownerReference of kind StatefulSet; pod name (or label       ``<pod name>``
                       ``statefulset.kubernetes.io/pod-name``)
=====================  ==========================================================  ================

One index is one rank: every completion index (and every PyTorchJob replica) is its own run with
its own remote prefix, so each rank resumes from its own newest checkpoint. ``RunIdentity.group``
names the enclosing job (shared by all ranks) and ``rank`` the index, for callers that coordinate
ranks. A non-indexed Job with ``parallelism > 1`` gives all its pods the same run.
The JobSet name equals ``<child Job name>-<completion index>`` (JobSet names its Jobs
``<jobset>-<replicatedjob>-<job-index>``), so the Job and JobSet rules agree.

Anything else (a bare pod without the annotation, a Deployment's pod) is an
:class:`IdentityError`: the webhook admits it unchanged with a Warning event. Every name is
checked with :func:`kresume.policy.check_run_name`; an unsafe value is an error, never rewritten.
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
    source : str — which rule matched, one of :data:`SOURCES`.
    group : str or None — the enclosing job (Job, JobSet, PyTorchJob, StatefulSet) shared by all
        ranks; ``None`` for the annotation.
    rank : int or None — completion index / replica index / StatefulSet ordinal, when there is one.
    """

    run: str
    source: str
    group: str | None = None
    rank: int | None = None


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


def _index(value: str | None, what: str) -> int | None:
    if value is None or value == "":
        return None
    if not re.fullmatch(r"[0-9]{1,9}", str(value)):
        raise RunNameError(f"{what}: {value!r} is not a non-negative integer")
    return int(value)


def _completion_index(labels: dict[str, str], annotations: dict[str, str]) -> int | None:
    raw = annotations.get(contract.K8S_COMPLETION_INDEX, labels.get(contract.K8S_COMPLETION_INDEX))
    return _index(raw, contract.K8S_COMPLETION_INDEX)


def _join(*parts: object) -> str:
    return "-".join(str(p) for p in parts if p is not None)


def run_identity(pod: dict[str, Any]) -> RunIdentity | IdentityError:
    """Derive the run of ``pod`` (a core/v1 Pod as a dict, as in an AdmissionReview).

    Returns
    -------
    RunIdentity
        When a rule of the module's table matches and gives a safe name.
    IdentityError
        ``reason="NoRun"`` when no rule matches (a bare pod without ``kresume.dev/run``);
        ``reason="InvalidRun"`` when the matching rule's value is unsafe (``/``, ``..``, a
        scheme, upper case, over 253 characters, a non-numeric index). Never raises.
    """
    try:
        return _derive(pod)
    except RunNameError as exc:
        return IdentityError("InvalidRun", str(exc))


def _derive(pod: dict[str, Any]) -> RunIdentity | IdentityError:
    labels, annotations, owners = _meta(pod)

    explicit = annotations.get(contract.ANN_RUN)
    if explicit is not None:
        run = check_run_name(explicit, field=f"annotation {contract.ANN_RUN}")
        return RunIdentity(run=run, source="annotation")

    jobset = labels.get(contract.JOBSET_NAME_LABEL)
    if jobset:
        rjob = labels.get(contract.JOBSET_REPLICATED_JOB_LABEL)
        if not rjob:
            raise RunNameError(
                f"label {contract.JOBSET_NAME_LABEL}={jobset!r} without "
                f"{contract.JOBSET_REPLICATED_JOB_LABEL}; set annotation {contract.ANN_RUN}"
            )
        job_index = _index(labels.get(contract.JOBSET_JOB_INDEX_LABEL), contract.JOBSET_JOB_INDEX_LABEL)
        if job_index is None:
            raise RunNameError(
                f"label {contract.JOBSET_NAME_LABEL}={jobset!r} without "
                f"{contract.JOBSET_JOB_INDEX_LABEL}; set annotation {contract.ANN_RUN}"
            )
        ci = _completion_index(labels, annotations)
        run = check_run_name(_join(jobset, rjob, job_index, ci), field="JobSet labels")
        return RunIdentity(run=run, source="jobset", group=jobset, rank=ci)

    kf_job = labels.get(contract.KUBEFLOW_JOB_NAME_LABEL)
    if kf_job:
        rtype = labels.get(contract.KUBEFLOW_REPLICA_TYPE_LABEL)
        rindex = _index(labels.get(contract.KUBEFLOW_REPLICA_INDEX_LABEL), contract.KUBEFLOW_REPLICA_INDEX_LABEL)
        if not rtype or rindex is None:
            raise RunNameError(
                f"label {contract.KUBEFLOW_JOB_NAME_LABEL}={kf_job!r} without "
                f"{contract.KUBEFLOW_REPLICA_TYPE_LABEL} and {contract.KUBEFLOW_REPLICA_INDEX_LABEL}; "
                f"set annotation {contract.ANN_RUN}"
            )
        # training-operator writes the type lower-cased ("master", "worker"); lower it in case.
        run = check_run_name(_join(kf_job, rtype.lower(), rindex), field="PyTorchJob labels")
        return RunIdentity(run=run, source="pytorchjob", group=kf_job, rank=rindex)

    job = (
        labels.get(contract.K8S_JOB_NAME_LABEL)
        or labels.get(contract.K8S_LEGACY_JOB_NAME_LABEL)
        or _owner(owners, "Job")
    )
    if job:
        ci = _completion_index(labels, annotations)
        run = check_run_name(_join(job, ci), field="Job name")
        return RunIdentity(run=run, source="job", group=job, rank=ci)

    sts = _owner(owners, "StatefulSet")
    if sts:
        name = (pod.get("metadata") or {}).get("name") or labels.get(
            contract.K8S_STATEFULSET_POD_NAME_LABEL
        )
        if not name:
            raise RunNameError(
                f"StatefulSet {sts!r} pod without a name; set annotation {contract.ANN_RUN}"
            )
        run = check_run_name(name, field="StatefulSet pod name")
        ordinal = name.rsplit("-", 1)[-1]
        return RunIdentity(
            run=run, source="statefulset", group=sts, rank=int(ordinal) if ordinal.isdigit() else None
        )

    return IdentityError(
        "NoRun",
        f"no run: the pod has no {contract.ANN_RUN} annotation and no Job, JobSet, StatefulSet or "
        "PyTorchJob owner; add the annotation to give it a run",
    )
