"""`kresume demo` with a trainer that cannot start (issue 12): the demo stops at once with a failure that names
the container and its error line, instead of waiting for its timeout; the admissions table and the final checks
say it. Real control plane, operator process and node agent; a file:// store (no S3 server needed here)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

from kresume.devtools.demo.report import Display, summary
from kresume.devtools.demo.run import run_demo
from kresume.devtools.demo.settings import DemoSettings


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("command", "expected"), [
    (("no-such-python",),
     'container trainer could not start (StartError, exit code 128): exec: "no-such-python": executable file not '
     "found in $PATH"),
    ((sys.executable, "-c", "import sys; sys.exit('bad --config: no such file')"),
     "container trainer crashed before its first step (exit code 1): bad --config: no such file"),
], ids=["command-not-found", "crash-before-first-step"])  # fmt: skip
def test_a_trainer_that_cannot_start_fails_the_demo_at_once(tmp_path: Path, command, expected):
    timeout = 500.0  # far more than the failure needs: the demo must not wait for it
    settings = DemoSettings(node="agent", preemptions=1, store=f"file://{tmp_path / 'store'}", work_dir=tmp_path / "demo",
                            trainer_command=command, timeout=timeout)  # fmt: skip
    out = io.StringIO()
    console = Console(file=out, width=200)
    with Display(console) as display:
        result = run_demo(settings, display)
    summary(result, console)
    text = out.getvalue()
    print(text)
    print(f"job submitted -> demo stopped: {result['durations']['job_s']} s")  # for the report (pytest -s)
    assert not result["ok"] and not result["timed_out"], text
    assert result["durations"]["job_s"] < timeout
    assert any(expected in p for p in result["problems"]), result["problems"]
    assert result["problems"][0].startswith("pod demo-train-") and expected in result["problems"][0]
    assert "the demo stopped at that failure" in result["problems"][1]
    assert f"FAILED: pod demo-train-" in text and expected in text.replace("\n", " ")
    lines = result["ckptrun"].splitlines()
    col = lines[0].index("RESTARTS")
    assert lines[1][col:col + len("RESTARTS")].strip() in ("", "0"), "a start failure is no restart:\n" + lines[1]
    first = result["admissions"][0]
    assert first["problems"] == [result["problems"][0]], "the admissions table shows the failure, not 'ok'"
