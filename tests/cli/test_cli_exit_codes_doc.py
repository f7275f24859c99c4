"""The README's exit-code list covers every StoreError kind the CLI can exit with (a first-time user
met exit 10 for an unusable restore DEST, which the list did not mention)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import kresume.cli
from kresume.store import errors

README = Path(__file__).resolve().parents[2] / "README.md"


def _documented() -> dict[int, str]:
    text = " ".join(README.read_text().split())
    para = text[text.index("Exit codes:") + len("Exit codes:"):].split(". ", 1)[0]
    return {int(m.group(1)): m.group(2) for m in (re.match(r"\s*(\d+) (.*)", item) for item in para.split("·")) if m}


def test_every_store_error_exit_code_is_documented_with_its_cases():
    documented = _documented()
    kinds = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.StoreError)]
    assert {c.exit_code for c in kinds} <= set(documented)
    assert set(documented) == set(range(11))
    assert "restore DEST unusable" in documented[errors.DestinationError.exit_code]
    assert "local checkpoint unusable" in documented[errors.SourceError.exit_code]
    assert all(word in documented[errors.UsageError.exit_code] for word in ("empty URL", "unknown scheme", "bucket"))
    assert "every command" in documented[errors.BucketMissing.exit_code]


def test_the_cli_docstring_lists_the_same_codes():
    doc = kresume.cli.__doc__
    assert "restore destination is unusable" in doc
    assert sorted(int(m) for m in re.findall(r"^(\d+) ", doc, flags=re.M)) == list(range(11))
