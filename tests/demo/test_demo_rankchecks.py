"""The multi-rank demo's per-restart checks (pure): issue 14's acceptance for one restart."""

from __future__ import annotations

from kresume.devtools.demo import ranks
from kresume.devtools.demo.observe import Seen
from kresume.devtools.demo.rankchecks import Round, Whole, round_problems, whole_problems

URL = "file:///s/run/checkpoints/{}/step_{:06d}"
WHOLE = Whole.of({"ranks": [{"rank": 0}, {"rank": 1}]}, [".metadata", "__0_0.distcp", "__1_0.distcp"])


def seen(step: int, first_seen: float) -> Seen:
    cid = f"{step:010d}-x"
    return Seen(cid, step, URL.format(cid, step), "", first_seen, "demo-train-0")


def rnd(steps: dict[int, int | None], urls: dict[int, str | None], launched: float = 100.0) -> Round:
    return Round("e", dict(steps), dict(urls), {0: launched, 1: launched})


def test_every_rank_from_the_newest_whole_step_passes():
    s10, s20 = seen(10, 10.0), seen(20, 50.0)
    wholes = {s10.id: WHOLE, s20.id: WHOLE}
    assert round_problems(rnd({0: 20, 1: 20}, {0: s20.url, 1: s20.url}), [s10, s20], wholes, 2) == []
    assert whole_problems([s10, s20], wholes, 2) == []


def test_ranks_resuming_from_different_steps_fail_loudly():
    s10, s20 = seen(10, 10.0), seen(20, 50.0)
    wholes = {s10.id: WHOLE, s20.id: WHOLE}
    problems = round_problems(rnd({0: 20, 1: 10}, {0: s20.url, 1: s10.url}), [s10, s20], wholes, 2)
    assert any("different steps" in p for p in problems) and any("different checkpoints" in p for p in problems)


def test_an_older_step_than_one_visible_before_launch_fails():
    s10, s20 = seen(10, 10.0), seen(20, 50.0)
    wholes = {s10.id: WHOLE, s20.id: WHOLE}
    problems = round_problems(rnd({0: 10, 1: 10}, {0: s10.url, 1: s10.url}), [s10, s20], wholes, 2)
    assert problems and "step 20 was committed before the trainers launched" in problems[0]
    # committed after the trainers launched: resuming from the older step is right
    late = seen(20, 150.0)
    wholes[late.id] = WHOLE
    assert round_problems(rnd({0: 10, 1: 10}, {0: s10.url, 1: s10.url}), [s10, late], wholes, 2) == []


def test_a_step_with_a_missing_rank_fails_resumed_or_not():
    s10 = seen(10, 10.0)
    half = {s10.id: Whole.of({"ranks": [{"rank": 0}]}, [".metadata", "__0_0.distcp"])}
    assert whole_problems([s10], half, 2) == [f"committed step 10 ({s10.id}) misses rank(s) [1]"]
    problems = round_problems(rnd({0: 10, 1: 10}, {0: s10.url, 1: s10.url}), [s10], half, 2)
    assert any("a step with a missing rank was resumable" in p for p in problems)
    assert whole_problems([s10], {}, 2) == [f"committed step 10 ({s10.id}): its manifest could not be read"]


def test_a_rank_that_never_started_and_a_wrong_fresh_start_fail():
    s10 = seen(10, 10.0)
    assert round_problems(rnd({0: 10}, {0: s10.url}), [s10], {s10.id: WHOLE}, 2) == [
        "round e: rank(s) [1] never started training"]
    assert round_problems(rnd({0: 0, 1: 0}, {0: None, 1: None}), [s10], {s10.id: WHOLE}, 2) == [
        "round e: fresh start although step(s) were committed before it launched"]


def test_target_ranks_are_seeded_and_cover_every_rank():
    assert ranks.target_ranks(20, 3, 2) == ranks.target_ranks(20, 3, 2)
    assert set(ranks.target_ranks(20, 3, 2)) == {0, 1}


def test_lost_steps_rule_of_a_multi_rank_restart():
    from kresume.devtools.demo.rankchecks import lost_steps_problem

    assert lost_steps_problem("step", 0, 10) is None and lost_steps_problem("step", 1, 10)
    assert lost_steps_problem("kill", 13, 10) is None  # a kill before the newest save was whole on every rank
    assert lost_steps_problem("kill", 21, 10)
