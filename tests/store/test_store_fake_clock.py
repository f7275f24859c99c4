"""The store suite does not depend on the year: a seeded part of it runs with the id clock at
2027-01-01 (tests/store/conftest.py ``KRESUME_FAKE_ID_CLOCK``) on the file and memory backends.
The whole suite on every backend: ``KRESUME_FAKE_ID_CLOCK=2027-01-01T00:00:00Z .venv/bin/python -m pytest tests/store``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kresume.store import clock, layout

HERE = Path(__file__).parent
SUBSET = ["test_store_pure.py", "test_store_protocol.py", "test_store_retention_bad.py", "test_store_pins.py",
          "test_store_orphans.py", "test_store_parts.py", "test_store_fake_clock.py::test_ids_follow_the_id_clock"]


def test_ids_follow_the_id_clock():
    year = clock.now().year
    assert layout.new_checkpoint_id(1).split("-")[1].startswith(str(year))
    assert layout.new_epoch_token().startswith(str(year))
    if os.environ.get("KRESUME_FAKE_ID_CLOCK", "").startswith("2027"):
        assert year == 2027


def test_the_store_suite_passes_with_the_id_clock_in_2027(tmp_path):
    if os.environ.get("KRESUME_FAKE_ID_CLOCK"):
        return  # already inside the faked run
    env = {**os.environ, "KRESUME_FAKE_ID_CLOCK": "2027-01-01T00:00:00Z", "KRESUME_TEST_BACKENDS": "file,memory"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *[str(HERE / t) for t in SUBSET]],
                          cwd=HERE.parents[1], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
