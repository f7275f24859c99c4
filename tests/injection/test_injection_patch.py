"""``injection.json_patch`` is exactly ``jsonpatch.JsonPatch.from_diff`` (the diff kopf answered admissions with):
on every golden pod, where its own additive diff must be the one used, and on seeded generated documents whose
changes are additive or not (then it defers to ``from_diff``)."""

from __future__ import annotations

import copy
import json
import random

import jsonpatch
import pytest

from injection.test_injection_golden import DATA, PARAMS, load, run_case
from kresume.injection import json_patch
from kresume.injection.patches import additive_ops


@pytest.mark.parametrize("case, mode", PARAMS, ids=[f"{c}-{m}" for c, m in PARAMS])
def test_golden_pods_take_the_additive_diff_and_it_is_jsonpatchs(case, mode):
    pod = load(DATA / f"{case}.yaml")
    mutated, _ = run_case(case, mode, copy.deepcopy(pod))
    expected = jsonpatch.JsonPatch.from_diff(pod, mutated).patch
    ours = additive_ops(pod, mutated)
    assert ours is not None, "injection only adds: the additive diff must apply"
    assert json.dumps(ours) == json.dumps(expected)
    assert jsonpatch.apply_patch(pod, ours) == mutated
    again = additive_ops(mutated, copy.deepcopy(mutated))
    assert again == [] == jsonpatch.JsonPatch.from_diff(mutated, copy.deepcopy(mutated)).patch


def _value(rng: random.Random, depth: int) -> object:
    kind = rng.choice(["str", "int", "float", "bool", "none", "dict", "list"] if depth < 3 else ["str", "int", "bool"])
    if kind == "dict":
        return {rng.choice("abcdefg/~") + str(rng.randint(0, 3)): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if kind == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {"str": lambda: rng.choice(["x", "y", "1", ""]), "int": lambda: rng.randint(0, 2),
            "float": lambda: rng.choice([1.0, 0.5]), "bool": lambda: rng.random() < 0.5, "none": lambda: None}[kind]()


def _mutate(rng: random.Random, doc: object, depth: int = 0) -> object:
    """A changed copy of ``doc``: mostly additions (as injection makes), sometimes removals, moves, replacements."""
    if isinstance(doc, dict):
        out = {k: (_mutate(rng, v, depth + 1) if rng.random() < 0.5 else copy.deepcopy(v)) for k, v in doc.items()}
        if out and rng.random() < 0.1:
            del out[rng.choice(list(out))]
        for _ in range(rng.randint(0, 2)):
            out[rng.choice("hijk/") + str(rng.randint(0, 3))] = _value(rng, depth + 1)
        return out
    if isinstance(doc, list):
        out = [(_mutate(rng, v, depth + 1) if rng.random() < 0.4 else copy.deepcopy(v)) for v in doc]
        for _ in range(rng.randint(0, 2)):
            out.insert(rng.randint(0, len(out)), _value(rng, depth + 1))
        if out and rng.random() < 0.1:
            out.pop(rng.randrange(len(out)))
        if len(out) > 1 and rng.random() < 0.1:
            out.append(out.pop(0))
        return out
    return _value(rng, depth) if rng.random() < 0.3 else doc


def test_generated_documents_get_jsonpatchs_operations():
    rng = random.Random(17)
    additive = 0
    for _ in range(3000):
        src = {"metadata": _value(rng, 1), "spec": {"containers": [_value(rng, 2) for _ in range(rng.randint(0, 3))]}}
        dst = _mutate(rng, src)
        expected = jsonpatch.JsonPatch.from_diff(src, dst).patch
        additive += additive_ops(src, dst) is not None
        ours = json_patch(src, dst)
        assert json.dumps(ours) == json.dumps(expected), (src, dst)
    assert additive > 1000  # both paths ran, the additive one often
