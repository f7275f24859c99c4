"""The fault kinds of the campaign, how a budget of faults is spread over them, and the counts per kind.

Pure: no servers here. :func:`allocate` and :func:`sessions` decide, from a seed, how many faults of each kind
are injected and in how many sessions; :class:`Tally` adds up what the sessions measured; :func:`render`
prints the table of docs/reliability.md.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from faults.invariants import VIOLATIONS, Violation


@dataclass(frozen=True)
class Kind:
    """A fault kind: its family (which harness injects it), what it does, and how many faults one
    session takes at most (a session shares one sidecar or operator and one run)."""

    family: str
    what: str
    per_session: int = 5


KINDS: dict[str, Kind] = {
    "stall": Kind("store", "the store accepts connections, then sends nothing for N s and drops them (proxy)"),
    "freeze": Kind("store", "the S3 server process frozen with SIGSTOP for N s, then SIGCONT"),
    "drip": Kind("store", "request and response bodies at 1 KiB/s for N s (proxy)"),
    "reset_mid": Kind("store", "TCP reset after half of a part's body (single PUT or multipart part)"),
    "storm": Kind("store", "every request answered 503 SlowDown or 500 InternalError for 30 s", per_session=2),
    "wrong_length": Kind("store", "Content-Length ≠ body: an upload cut upstream with a matching length (the "
                                  "server stores half and answers 200), or a download that declares more than it sends"),
    "truncated": Kind("store", "a 200/206 with half the body and a matching Content-Length, with or without "
                               "the x-amz-checksum headers (manifests, pointer, data)"),
    "sigterm_frozen": Kind("store", "SIGTERM to the sidecar while the S3 server is frozen mid-upload", per_session=1),
    "disk_full_trainer": Kind("disk", "the trainer's folder is a small tmpfs that fills up mid-save (ENOSPC)"),
    "disk_full_restore": Kind("disk", "`kresume restore` into a tmpfs too small for the checkpoint (ENOSPC), "
                                      "over an older copy", per_session=3),
    "clock_jump": Kind("clock", "the sidecar's wall clock stepped ±1 h during retention; `prune "
                                "--orphans-older-than` run with the clock 1 h ahead while a commit uploads"),
    "operator_kill": Kind("k8s", "the operator SIGKILLed in the middle of an admission burst, then restarted",
                          per_session=3),
    "apiserver_restart": Kind("k8s", "kube-apiserver stopped and started again on the same etcd under a running "
                                     "operator and sidecar", per_session=2),
    "webhook_down": Kind("k8s", "opted-in pods created while the webhook is unreachable (operator stopped, or a "
                                "port that accepts and never answers)", per_session=4),
}
"""Every fault kind, in table order."""


def allocate(total: int, rng: random.Random, kinds: list[str] | None = None) -> dict[str, int]:
    """Spread ``total`` faults over ``kinds`` (default: all): each kind gets ``total // len`` and the
    remainder goes to kinds drawn without replacement from ``rng``. Raises ValueError when ``total`` is
    smaller than the number of kinds (every kind must be injected at least once)."""
    names = list(kinds or KINDS)
    unknown = [k for k in names if k not in KINDS]
    if unknown:
        raise ValueError(f"--kinds: unknown {unknown}; choose from {list(KINDS)}")
    if total < len(names):
        raise ValueError(f"--faults {total}: at least one per kind is needed ({len(names)} kinds)")
    base, extra = divmod(total, len(names))
    out = {k: base for k in names}
    for k in rng.sample(names, extra):
        out[k] += 1
    return out


def sessions(kind: str, count: int) -> list[int]:
    """Faults per session for ``count`` faults of ``kind``: as even as the kind's ``per_session`` allows."""
    if count <= 0:
        return []
    per = KINDS[kind].per_session
    n = -(-count // per)
    base, extra = divmod(count, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


@dataclass
class Tally:
    """What the sessions of one kind measured. ``committed``: manifests read back from the store;
    ``abandoned``: checkpoints the sidecar said it gave up (its summary line); ``retried``: retries kresume's
    own log shows (whole-commit retries and kresume.store's per-request retries; s3fs's and botocore's own
    retries underneath are not logged); ``requests_hit``: requests the proxy faulted (each one was retried by
    some layer, or failed its commit); ``recovery``: how each session ended."""

    kind: str
    injected: int = 0
    sessions: int = 0
    committed: int = 0
    abandoned: int = 0
    retried: int = 0
    requests_hit: int = 0
    violations: list[Violation] = field(default_factory=list)
    recovery: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: Tally) -> None:
        self.injected += other.injected
        self.sessions += other.sessions
        self.committed += other.committed
        self.abandoned += other.abandoned
        self.retried += other.retried
        self.requests_hit += other.requests_hit
        self.violations += other.violations
        self.recovery.update(other.recovery)
        self.notes += other.notes
        self.seconds += other.seconds


def render(tallies: list[Tally]) -> str:
    """The campaign table (Markdown), a totals row, then every violation and note."""
    head = ("| fault kind | injected | sessions | committed | abandoned | retried | requests hit | violations | "
            "recovery |\n|---|---:|---:|---:|---:|---:|---:|---:|---|")
    rows = []
    for t in tallies:
        rec = ", ".join(f"{k} {v}" for k, v in sorted(t.recovery.items())) or "-"
        rows.append(f"| {t.kind} | {t.injected} | {t.sessions} | {t.committed} | {t.abandoned} | {t.retried} | "
                    f"{t.requests_hit or '-'} | {len(t.violations)} | {rec} |")
    total = Tally("**total**")
    for t in tallies:
        total.add(t)
    rows.append(f"| **total** | **{total.injected}** | {total.sessions} | {total.committed} | {total.abandoned} | "
                f"{total.retried} | {total.requests_hit} | **{len(total.violations)}** | |")
    lines = [head, *rows]
    by_kind = Counter(v.kind for v in total.violations)
    if by_kind:
        lines += ["", "Violations: " + ", ".join(f"{k} {n} ({VIOLATIONS[k]})" for k, n in sorted(by_kind.items()))]
        lines += [f"- {t.kind}: [{v.kind}] {v.detail}" for t in tallies for v in t.violations]
    notes = [f"- {t.kind}: {n}" for t in tallies for n in t.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines)
