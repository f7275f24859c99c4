"""S3 5xx, throttling and connection resets, injected by a real HTTP proxy in front of moto.

The sidecar runs as a separate process pointed at the proxy (``tests/_fixtures/faultproxy.py``);
the checks read the store directly from moto (no faults) so they see the truth. Layers of retry,
outermost first: the sidecar's whole-commit retries (logged, ``kresume_sidecar_failures_total
{reason="store_retry"}``) → :func:`kresume.store.storage.retrying` (per request group) → s3fs
``_error_wrapper`` (5 tries on SlowDown and connection errors) → botocore (5 attempts on 5xx,
"legacy" mode). Tests that target an inner kresume layer turn botocore's retries off with the
documented botocore ``Config(retries={"total_max_attempts": 1})`` so the faults reach it.
"""

from __future__ import annotations

import re
import time

import pytest
import torch

from _fixtures.faultproxy import FaultPlan
from kresume.store import errors
from kresume.store.runstore import RunStore

NO_BOTOCORE_RETRIES = {"retries": {"total_max_attempts": 1}}
DATA_PUTS = r"/checkpoints/"  # data objects only (not manifests, pointer or listings)


def _ckpt(path, step: int, mib: float) -> None:
    torch.save({"w": torch.randn(int(mib * 2**18)), "global_step": step, "epoch": 0}, path)


def _proxied(run, proxy, **config):
    """The moto run tuple with its storage options pointed at ``proxy`` (plus botocore config)."""
    url, options, env, _ = run
    opts = proxy.storage_options(options)
    opts["config_kwargs"] = {**opts.get("config_kwargs", {}), **config}
    return url, opts, env, RunStore.open(url, opts)


def _metric(body: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when absent)."""
    total = 0.0
    for line in body.splitlines():
        m = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def _assert_all_committed_once(store: RunStore, names: list[str], newest: str) -> None:
    by: dict[str, int] = {}
    for m in store.list():
        by[m.name] = by.get(m.name, 0) + 1
    assert by == {n: 1 for n in names}, by
    assert store.verify(checksums=True) == []
    latest = store.latest()
    assert latest is not None and latest.manifest.name == newest and latest.fallback_reason is None, latest


def test_sidecar_commits_everything_through_random_5xx_and_resets(tmp_path, moto_run, fault_proxy, start_sidecar,
                                                                  wait_committed, moto_s3):
    """Every 4th request fails (503 SlowDown, 500 InternalError or a reset, in a seeded order that
    holds all three within the first 8) with stock client settings; includes a 20 MiB multipart
    upload and a folder checkpoint."""
    truth = moto_run[3]
    proxy = fault_proxy(moto_s3.endpoint,
                        FaultPlan(every_nth=4, kinds=("slowdown", "internal", "reset"), seed=11))
    run = _proxied(moto_run, proxy)
    watch = tmp_path / "ckpt"
    watch.mkdir()
    sc = start_sidecar(watch, run, "--concurrency", "2")
    sc.wait_log(lambda r: r.get("msg", "").startswith("watching"))
    names = []
    for i, mib in enumerate([2, 3, 20, 4], start=1):
        names.append(f"epoch=0-step={i * 10}.ckpt")
        _ckpt(watch / names[-1], i * 10, mib)
        time.sleep(0.3)
    staging = tmp_path / "staging" / "sharded-step_50"  # built aside, then renamed in (as writers publish)
    staging.mkdir(parents=True)
    for r in range(2):
        _ckpt(staging / f"rank{r}.pt", 50, 1.5)
    (staging / ".kresume-complete").write_text("")
    folder = watch / staging.name
    staging.rename(folder)
    names.append(folder.name)
    wait_committed(truth, set(names), 180)
    for n in names:  # the metric moves after the pointer, i.e. after the manifest is visible
        sc.wait_log(lambda r, n=n: r.get("unit") == n and r.get("msg", "").startswith("committed"), 30)
    status, body = sc.get("/metrics")
    assert status == 200
    rc, out = sc.stop()
    assert rc == 0 and out.startswith(f"kresume sidecar: committed={len(names)} abandoned=0"), out
    proxy.plan.enabled = False
    _assert_all_committed_once(truth, names, newest=folder.name)
    assert sum(proxy.stats.faults.values()) >= 8, proxy.stats.faults  # the faults really happened
    assert set(proxy.stats.faults) == {"slowdown", "internal", "reset"}, proxy.stats.faults
    assert _metric(body, "kresume_sidecar_commits_total") == len(names)
    assert _metric(body, "kresume_sidecar_failures_total", reason="store") == 0  # nothing given up


def test_sidecar_counts_retries_when_throttling_outlasts_the_client(tmp_path, moto_run, fault_proxy, start_sidecar,
                                                                    wait_committed, moto_s3):
    """Every data upload answers SlowDown until the sidecar's own commit retry has taken over (after
    s3fs's and kresume.store's tries are spent) — logged and counted; then S3 recovers and it commits."""
    truth = moto_run[3]
    proxy = fault_proxy(moto_s3.endpoint, FaultPlan(every_nth=1, kinds=("slowdown",), methods=("PUT",),
                                                    path_regex=DATA_PUTS))
    run = _proxied(moto_run, proxy, **NO_BOTOCORE_RETRIES)
    watch = tmp_path / "ckpt"
    watch.mkdir()
    name = "epoch=0-step=10.ckpt"
    _ckpt(watch / name, 10, 2)
    sc = start_sidecar(watch, run)
    retry = sc.wait_log(lambda r: r.get("unit") == name and "retry 2/" in r.get("msg", ""), 120)
    assert "SlowDown" in retry["msg"] or "reduce your request rate" in retry["msg"], retry
    proxy.plan.enabled = False  # throttling ends
    wait_committed(truth, {name}, 120)
    sc.wait_log(lambda r: r.get("unit") == name and r.get("msg", "").startswith("committed"), 30)
    status, body = sc.get("/metrics")
    assert _metric(body, "kresume_sidecar_failures_total", reason="store_retry") >= 1, body
    assert _metric(body, "kresume_sidecar_commits_total") == 1
    assert sc.stop()[0] == 0
    assert proxy.stats.faults["slowdown"] >= 2, proxy.stats.faults
    _assert_all_committed_once(truth, [name], newest=name)


@pytest.mark.parametrize("kind", [
    "slowdown",
    "reset",
    "internal",
])
def test_runstore_commit_retries_through_transient_faults(kind, tmp_path, moto_run, fault_proxy, moto_s3):
    """7 faults in a row on the data PUT (more than s3fs's own 5 tries, botocore retries off):
    ``RunStore.commit`` succeeds through ``storage.retrying`` and commits the whole file."""
    truth = moto_run[3]
    proxy = fault_proxy(moto_s3.endpoint, FaultPlan(every_nth=1, kinds=(kind,), methods=("PUT",),
                                                    path_regex=DATA_PUTS, max_faults=7))
    store = _proxied(moto_run, proxy, **NO_BOTOCORE_RETRIES)[3]
    src = tmp_path / "epoch=0-step=10.ckpt"
    _ckpt(src, 10, 1)
    manifest = store.commit(src)
    assert proxy.stats.faults[kind] == 7
    puts = [o for m, p, o in proxy.stats.log if m == "PUT" and DATA_PUTS in p]
    assert puts == [kind] * 7 + ["200"], puts
    assert manifest.files[0].size == src.stat().st_size
    _assert_all_committed_once(truth, [src.name], newest=src.name)


def test_runstore_commit_permission_denied_fails_fast(tmp_path, moto_run, fault_proxy, moto_s3):
    """A 403 AccessDenied is permanent: one request, PermissionDenied naming the URL and the fix,
    nothing committed."""
    truth = moto_run[3]
    proxy = fault_proxy(moto_s3.endpoint, FaultPlan(fraction=1.0, kinds=("denied",)))
    store = _proxied(moto_run, proxy)[3]  # stock client retries: they must not retry a 403 either
    src = tmp_path / "epoch=0-step=10.ckpt"
    _ckpt(src, 10, 1)
    with pytest.raises(errors.PermissionDenied) as info:
        store.commit(src)
    assert info.value.url.startswith(truth.url) and "grant" in str(info.value), info.value
    assert sum(proxy.stats.requests.values()) == 1 and proxy.stats.faults == {"denied": 1}, proxy.stats
    proxy.plan.enabled = False
    assert truth.manifest_ids() == [] and truth.read_pointer() is None
