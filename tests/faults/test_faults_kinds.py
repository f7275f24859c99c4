"""The campaign's plan and table (pure): how a budget of faults is spread, and what the table says."""

from __future__ import annotations

import random

import pytest

from faults.invariants import Violation
from faults.kinds import KINDS, Tally, allocate, render, sessions


def test_every_kind_gets_its_share_and_the_total_is_kept():
    for total in (len(KINDS), 200, 223):
        share = allocate(total, random.Random(total))
        assert sum(share.values()) == total and set(share) == set(KINDS)
        assert max(share.values()) - min(share.values()) <= 1
    assert allocate(50, random.Random(7)) == allocate(50, random.Random(7))  # seeded


def test_a_budget_below_one_per_kind_or_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="at least one per kind"):
        allocate(len(KINDS) - 1, random.Random(0))
    with pytest.raises(ValueError, match="unknown"):
        allocate(3, random.Random(0), ["stall", "earthquake"])


@pytest.mark.parametrize("kind,count,want", [("stall", 16, [4, 4, 4, 4]), ("storm", 5, [2, 2, 1]),
                                             ("sigterm_frozen", 3, [1, 1, 1]), ("stall", 0, [])])
def test_sessions_split_evenly_within_the_kinds_size(kind, count, want):
    assert sessions(kind, count) == want


def test_the_table_totals_and_lists_every_violation():
    a = Tally("stall", injected=3, sessions=1, committed=9, retried=2, requests_hit=40)
    a.recovery["recovered"] += 1
    b = Tally("storm", injected=1, sessions=1, committed=4, abandoned=1)
    b.violations.append(Violation("lost_commit", "x was reported committed and is gone"))
    out = render([a, b])
    assert "| stall | 3 | 1 | 9 | 0 | 2 | 40 | 0 | recovered 1 |" in out
    assert "| **total** | **4** | 2 | 13 | 1 | 2 | 40 | **1** | |" in out
    assert "- storm: [lost_commit] x was reported committed and is gone" in out
    with pytest.raises(ValueError):
        Violation("oops", "not a kind")
