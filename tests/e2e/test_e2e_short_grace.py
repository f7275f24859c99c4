"""A grace period too short for the final upload (issue 15 item 1): the real control plane, SeaweedFS, the operator
process, the node agent and a real Lightning Job with 71 MB checkpoints; the policy gives the sidecar 1 s after
SIGTERM (``sidecar.graceSeconds: 1``) while the pod keeps 15 s, so the trainer's final save is written but cannot be
uploaded in time. The sidecar must not start (or must cancel) that upload: the pointer stays on the previous
committed checkpoint, the restart resumes from it, and nothing partial is ever visible."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from kresume.devtools.demo.report import Display, summary
from kresume.devtools.demo.run import run_demo
from kresume.devtools.demo.settings import DemoSettings


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_grace_period_too_short_for_the_upload_leaves_the_pointer_on_the_previous_checkpoint(tmp_path: Path):
    settings = DemoSettings(node="agent", preemptions=1, seed=1, modes=("upload",), max_steps=100, every_n_steps=20,
                            step_seconds=0.05, hidden=524288, sidecar_grace_seconds=1, expect_zero_loss=False,
                            first_preemption_after=2, work_dir=tmp_path / "demo", timeout=900)  # fmt: skip
    out = io.StringIO()
    console = Console(file=out, width=200)
    with Display(console) as display:
        result = run_demo(settings, display)
    summary(result, console)
    print(out.getvalue())
    assert result["problems"] == [] and result["ok"], out.getvalue()
    (pre,) = result["preemptions"]
    committed = result["committed"]
    pod_dir = next(Path(result["work_dir"], "pods").glob(f"*_{pre['pod']}_*"))
    events = [json.loads(x) for x in (pod_dir / "trainer.log").read_text().splitlines() if x.startswith("{")]
    final = next(e for e in events if e.get("event") == "preempted")  # the trainer's final save (or its newest)
    assert final["step"] == pre["last_step_before"], final
    by_old = [c for c in committed if c["source_pod"] == pre["pod"]]
    assert by_old, result
    assert pre["resumed_step"] == max(c["step"] for c in by_old) <= pre["last_step_before"], pre
    assert result["admissions"][1]["injected_step"] == pre["resumed_step"]
    if final.get("state") == "none":
        # SIGTERM came right after a regular save of the last step: the trainer wrote nothing new (state "none")
        # and that save, whose upload had begun before the signal, may finish inside the 1 s (seen in CI: 0.75 s);
        # then it is the newest commit and the restart resumes from it (asserted above). Nothing else to check.
        return
    # A save written after SIGTERM (the final save) is never committed with 1 s of grace, and the restart resumes
    # from the newest commit before it.
    assert not any(c["url"].endswith("/" + final["checkpoint"]) for c in by_old), (final, by_old)
    # The sidecar says why it did not commit the final save (not started for lack of time, cancelled, or its
    # requests cut by the deadline) in a warning naming it, and it never logged a commit of it.
    recs = [json.loads(x) for x in (pod_dir / "kresume-sidecar.log").read_text().splitlines() if x.startswith("{")]
    name = final["checkpoint"]
    assert any(r.get("level") == "warning" and name in r.get("msg", "") for r in recs), \
        "\n".join(r.get("msg", "") for r in recs[-30:])
    assert not any(r.get("msg", "").startswith(f"committed {name} ") for r in recs)
