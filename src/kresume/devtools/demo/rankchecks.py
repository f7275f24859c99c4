"""Checks of a multi-rank demo restart (pure): issue 14's acceptance for one restart of every rank.

A *round* is one resume epoch of the job: the pods of every rank admitted with the same ``KRESUME_EPOCH``, which
rendezvous and train together. After a preemption of one rank the whole job restarts into a new round. For the new
round the rules are (docs/store-protocol.md "Resume epochs"; issue 14 "Acceptance"):

1. every rank started (the trainer's ``start`` event), from the same step and the same checkpoint URL;
2. that checkpoint is a committed whole step: its manifest was seen in the store and lists a part of every rank
   (``source.ranks``) and, for DCP, ``.metadata`` and a ``__R_*.distcp`` shard of every rank;
3. it is the newest whole step: no committed step newer than it was visible before the round's rank 0 trainer
   launched (``resume_from()`` runs after that; a commit landing later may or may not be seen);
4. no step (not only the resumed one) was ever committed with a rank missing;
5. lost steps: 0 after a graceful preemption (every rank saves the agreed stop step), at most two checkpoint
   intervals after a SIGKILL (:func:`lost_steps_problem`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kresume.devtools.demo import chaos
from kresume.devtools.demo.observe import Seen

_SHARD = re.compile(r"(?:^|/)__(\d+)_\d+\.distcp$")


@dataclass(frozen=True)
class Whole:
    """What one committed manifest says about its ranks: ``ranks`` (from ``source.ranks``; empty for a
    single-rank commit), ``shard_ranks`` (ranks with a ``__R_*.distcp`` file), ``has_metadata`` (DCP
    ``.metadata``)."""

    ranks: frozenset[int]
    shard_ranks: frozenset[int]
    has_metadata: bool

    @classmethod
    def of(cls, source: Mapping[str, object] | None, paths: Iterable[str]) -> Whole:
        """From a manifest's ``source`` dict and file paths."""
        ranks = frozenset(int(r["rank"]) for r in (source or {}).get("ranks") or []  # type: ignore[union-attr]
                          if isinstance(r, dict) and isinstance(r.get("rank"), int))  # fmt: skip
        paths = list(paths)
        shards = frozenset(int(m.group(1)) for p in paths if (m := _SHARD.search(p)))
        return cls(ranks, shards, any(p.rsplit("/", 1)[-1] == ".metadata" for p in paths))

    def missing(self, world_size: int) -> list[int]:
        """Ranks ``0..world_size-1`` without a part or without a shard (sorted)."""
        return sorted(r for r in range(world_size) if r not in self.ranks or r not in self.shard_ranks)


@dataclass
class Round:
    """One round (resume epoch) as the demo saw it: the start of each rank's trainer."""

    epoch: str
    start_step: dict[int, int | None] = field(default_factory=dict)
    resumed_from: dict[int, str | None] = field(default_factory=dict)
    launched: dict[int, float] = field(default_factory=dict)
    """Epoch seconds each rank's (successful) trainer process launched."""
    pods: dict[int, str] = field(default_factory=dict)


def whole_problems(seen: Iterable[Seen], wholes: Mapping[str, Whole], world_size: int) -> list[str]:
    """Rule 4: every committed multi-rank step names every rank (a step whose manifest could not be read is
    reported too: it cannot be judged)."""
    out = []
    for s in seen:
        w = wholes.get(s.id)
        if w is None:
            out.append(f"committed step {s.step} ({s.id}): its manifest could not be read")
        elif w.missing(world_size) or not w.has_metadata:
            out.append(f"committed step {s.step} ({s.id}) misses rank(s) {w.missing(world_size)}"
                       + ("" if w.has_metadata else " and .metadata"))
    return out


def round_problems(r: Round, seen: Iterable[Seen], wholes: Mapping[str, Whole], world_size: int) -> list[str]:
    """Rules 1–3 for one round after a restart (empty: every rank resumed from the newest whole step)."""
    seen = list(seen)
    absent = [k for k in range(world_size) if r.start_step.get(k) is None]
    if absent:
        return [f"round {r.epoch}: rank(s) {absent} never started training"]
    steps = {k: r.start_step[k] for k in range(world_size)}
    urls = {k: r.resumed_from.get(k) for k in range(world_size)}
    problems = []
    if len(set(steps.values())) > 1:
        problems.append(f"round {r.epoch}: ranks resumed from different steps: "
                        + ", ".join(f"rank {k} step {v}" for k, v in steps.items()))
    if len(set(urls.values())) > 1:
        problems.append(f"round {r.epoch}: ranks resumed from different checkpoints: {urls}")
    url = urls.get(0)
    if url is None:
        if any(steps.values()):
            problems.append(f"round {r.epoch}: a fresh start, yet the trainers started at {steps}")
        elif any(s.first_seen < r.launched.get(0, 0.0) for s in seen):
            problems.append(f"round {r.epoch}: fresh start although step(s) were committed before it launched")
        return problems
    m = next((s for s in seen if url.rstrip("/") == s.url.rstrip("/")), None)
    if m is None:
        return problems + [f"round {r.epoch}: resumed from {url}, which is not a committed checkpoint of the run"]
    w = wholes.get(m.id)
    if w is None or w.missing(world_size) or not w.has_metadata:
        problems.append(f"round {r.epoch}: resumed from step {m.step}, which misses rank(s) "
                        f"{w.missing(world_size) if w else '?'} (a step with a missing rank was resumable)")
    if steps[0] != m.step:
        problems.append(f"round {r.epoch}: rank 0 started at step {steps[0]}, the checkpoint is step {m.step}")
    launched = r.launched.get(0)
    if launched is not None:
        newer = [s for s in seen if s.first_seen < launched and (s.step or 0) > (m.step or 0)]
        if newer:
            best = max(newer, key=lambda s: s.step or 0)
            problems.append(f"round {r.epoch}: resumed from step {m.step}, but step {best.step} was committed "
                            "before the trainers launched (not the newest whole step)")
    return problems


def lost_steps_problem(mode: str, lost: int | None, every_n_steps: int) -> str | None:
    """Issue 15's rule for a multi-rank restart: 0 lost steps after a graceful preemption (every rank saves the
    agreed stop step); after a SIGKILL at most two checkpoint intervals, not one as for one pod: a step is whole
    only once every rank's shard has settled and uploaded, so a kill within that time of a save also loses the
    interval before it. None when the rule holds."""
    if mode == "kill" and lost is not None and every_n_steps < lost <= 2 * every_n_steps:
        return None
    return chaos.lost_steps_problem(mode, lost, every_n_steps)
