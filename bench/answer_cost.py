"""CPU of building one ``inject-pod`` answer, kopf's way against kresume's, on a golden pod (in-process).

kopf's way is what its admission path did with the pod kresume made, without its handler lifecycle: a deep copy
of the body (``handlers._plain``), ``Patch`` + ``injection.replace_body``, ``Patch.as_json_patch`` (another deep
copy, then ``jsonpatch.from_diff``) and ``build_response``; kresume's is ``operator.review.response`` (the
additive diff of ``injection.json_patch``). Both answers are checked equal first.

    .venv/bin/python bench/answer_cost.py [--case job-pod] [--mode native] [--number 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import sys
import timeit
from pathlib import Path

import jsonpatch
from kopf._cogs.structs.bodies import Body
from kopf._cogs.structs.patches import Patch
from kopf._core.engines.admission import build_response

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _fixtures.operator import review as make_review  # noqa: E402
from injection.test_injection_golden import DATA, load, run_case  # noqa: E402

from kresume.injection import replace_body  # noqa: E402
from kresume.injection.patches import additive_ops  # noqa: E402
from kresume.operator import review  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="job-pod", help="golden input pod (tests/injection/testdata/<case>.yaml)")
    ap.add_argument("--mode", default="native", choices=["native", "legacy"])
    ap.add_argument("--number", type=int, default=500, help="answers per timing")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    pod = load(DATA / f"{args.case}.yaml")
    mutated, warnings = run_case(args.case, args.mode, copy.deepcopy(pod))
    rev = make_review(pod, pod["metadata"].get("namespace", "default"))

    def kopf_way() -> dict:
        patch = Patch(body=Body(copy.deepcopy(pod)))
        patch.fns.append(replace_body(mutated))
        return build_response(request=rev, outcomes={}, warnings=list(warnings), jsonpatch=patch.as_json_patch())

    def kresume_way() -> dict:
        return review.response(rev, pod, mutated, list(warnings))

    assert kopf_way() == kresume_way(), "the answers differ"
    cases = [("kopf's answer", kopf_way), ("kresume's answer", kresume_way),
             ("jsonpatch.from_diff", lambda: jsonpatch.JsonPatch.from_diff(pod, mutated)),
             ("additive_ops", lambda: additive_ops(pod, mutated))]
    for _ in range(args.repeats):
        print("  ".join(f"{name} {timeit.timeit(fn, number=args.number) / args.number * 1e3:.3f} ms"
                        for name, fn in cases), flush=True)


if __name__ == "__main__":
    main()
