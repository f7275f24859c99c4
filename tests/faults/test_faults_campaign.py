"""The seeded small fault campaign of the normal suite: every fault kind injected at least once on the real
parts (moto behind the fault proxy, tmpfs mounts, the session's control plane with the operator process),
each session checked from what the store and the API server hold afterwards. Zero invariant violations, and
the sidecar and the operator recover by themselves.

The long campaign (≥ 200 faults, 30 s storms) is ``python -m tests.faults --seed S --faults N``; its table
is in docs/reliability.md.
"""

from __future__ import annotations

import pytest

from faults import campaign
from faults.kinds import KINDS, render
from faults.world import World

SEED = 1616


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with World(tmp_path_factory.mktemp("faults")) as w:
        yield w


def _family(family: str) -> list[str]:
    return [k for k, kind in KINDS.items() if kind.family == family]


def _campaign(world: World, kinds: list[str]) -> None:
    tallies = campaign.run(world, len(kinds), SEED, kinds=kinds, profile="ci")
    table = render(tallies)
    print(table)
    assert [t.kind for t in tallies] == kinds
    for t in tallies:
        assert t.injected >= 1, f"{t.kind} was never injected:\n{table}"
        assert not t.violations, f"{t.kind}: invariant violations:\n{table}"
        assert set(t.recovery) <= {"recovered", "restored with room", "exited 0 by the deadline"}, \
            f"{t.kind} did not recover by itself:\n{table}"


@pytest.mark.slow
def test_store_faults_under_a_running_sidecar(world):
    _campaign(world, _family("store"))


def test_full_disks_under_the_trainer_and_the_restore(world):
    _campaign(world, _family("disk"))


def test_clock_jumps_of_the_sidecar(world):
    _campaign(world, _family("clock"))


@pytest.mark.slow
def test_kubernetes_faults_under_the_operator(world, control_plane):
    world._plane = control_plane  # the session's control plane (kresume's CRDs are applied by the world)
    _campaign(world, _family("k8s"))
