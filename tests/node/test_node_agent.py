"""The local node agent against the real control plane: pods run as processes, report status, get preempted."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client as k
import kubernetes.watch
import pytest

from kresume.devtools.cluster import ControlPlane
from kresume.devtools.node import NodeAgent, NodeSettings

PY = sys.executable


@pytest.fixture
def node(control_plane: ControlPlane, k8s_namespace: str, tmp_path: Path) -> Iterator[NodeAgent]:
    api = control_plane.api_client()
    settings = NodeSettings(node_name=f"dev-{uuid.uuid4().hex[:8]}", namespaces=(k8s_namespace,),
                            work_dir=tmp_path / "work", log_dir=tmp_path / "logs", resync_seconds=2)
    with NodeAgent(api, settings) as agent:
        yield agent
    api.close()


def _core(cp: ControlPlane) -> k.CoreV1Api:
    return k.CoreV1Api(cp.api_client())


def _wait(what: str, probe, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _phase(core: k.CoreV1Api, ns: str, name: str) -> str | None:
    try:
        return core.read_namespaced_pod_status(name, ns).status.phase
    except k.exceptions.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_pod_runs_to_succeeded_with_env_from_fieldref_secret_and_configmap(
    control_plane: ControlPlane, k8s_namespace: str, node: NodeAgent
):
    core, ns = _core(control_plane), k8s_namespace
    core.create_namespaced_secret(ns, k.V1Secret(metadata=k.V1ObjectMeta(name="creds"), data={
        "TOKEN": base64.b64encode(b"s3cr3t").decode(), "OTHER": base64.b64encode(b"o").decode()}))
    core.create_namespaced_config_map(ns, k.V1ConfigMap(metadata=k.V1ObjectMeta(name="cfg"), data={"MODE": "fast"}))
    script = ("import json, os; print(json.dumps({k: os.environ.get(k) for k in "
              "['POD', 'NS', 'UID', 'IP', 'TOKEN', 'MODE', 'X_OTHER', 'GREETING', 'HOSTNAME']}))")
    pod = core.create_namespaced_pod(ns, k.V1Pod(
        metadata=k.V1ObjectMeta(name="envs", labels={"app": "t"}),
        spec=k.V1PodSpec(restart_policy="Never", containers=[k.V1Container(
            name="main", image="ignored:latest", command=["python", "-c"], args=[script],
            env_from=[k.V1EnvFromSource(secret_ref=k.V1SecretEnvSource(name="creds"), prefix="X_")],
            env=[
                k.V1EnvVar(name="POD", value_from=k.V1EnvVarSource(field_ref=k.V1ObjectFieldSelector(
                    field_path="metadata.name"))),
                k.V1EnvVar(name="NS", value_from=k.V1EnvVarSource(field_ref=k.V1ObjectFieldSelector(
                    field_path="metadata.namespace"))),
                k.V1EnvVar(name="UID", value_from=k.V1EnvVarSource(field_ref=k.V1ObjectFieldSelector(
                    field_path="metadata.uid"))),
                k.V1EnvVar(name="IP", value_from=k.V1EnvVarSource(field_ref=k.V1ObjectFieldSelector(
                    field_path="status.podIP"))),
                k.V1EnvVar(name="TOKEN", value_from=k.V1EnvVarSource(secret_key_ref=k.V1SecretKeySelector(
                    name="creds", key="TOKEN"))),
                k.V1EnvVar(name="MODE", value_from=k.V1EnvVarSource(config_map_key_ref=k.V1ConfigMapKeySelector(
                    name="cfg", key="MODE"))),
                k.V1EnvVar(name="GREETING", value="hello $(POD) $$(POD)"),
            ])]),
    ))  # fmt: skip
    assert _wait("pod Succeeded", lambda: _phase(core, ns, "envs") in ("Succeeded", "Failed")) and \
        _phase(core, ns, "envs") == "Succeeded"
    got = core.read_namespaced_pod("envs", ns)
    assert got.spec.node_name == node.settings.node_name  # bound through pods/binding
    cs = got.status.container_statuses[0]
    assert cs.state.terminated.exit_code == 0 and cs.state.terminated.reason == "Completed"
    runner = node.find(ns, "envs")
    out = [line for line in runner.log_path("main").read_text().splitlines() if line.startswith("{")]
    env = json.loads(out[-1])
    assert env == {"POD": "envs", "NS": ns, "UID": pod.metadata.uid, "IP": "127.0.0.1", "TOKEN": "s3cr3t",
                   "MODE": "fast", "X_OTHER": "o", "GREETING": "hello envs $(POD)", "HOSTNAME": "envs"}
    conditions = {c.type: c.status for c in got.status.conditions}
    assert conditions["PodScheduled"] == "True" and conditions["Initialized"] == "True"


def test_emptydir_is_visible_at_its_mount_path_and_shared_between_containers(
    control_plane: ControlPlane, k8s_namespace: str, node: NodeAgent
):
    core, ns = _core(control_plane), k8s_namespace
    mount = f"/kresume-node-test-{uuid.uuid4().hex[:8]}/data"
    assert not Path(mount).parent.exists()
    writer = f"open('{mount}/hello.txt', 'w').write('from writer')"
    reader = (f"import os, time\nwhile not os.path.exists('{mount}/hello.txt'): time.sleep(0.05)\n"
              f"print('READ', open('{mount}/hello.txt').read(), os.getcwd())")
    core.create_namespaced_pod(ns, k.V1Pod(
        metadata=k.V1ObjectMeta(name="vols"),
        spec=k.V1PodSpec(restart_policy="Never", volumes=[k.V1Volume(name="shared", empty_dir={})], containers=[
            k.V1Container(name="writer", image="ignored", command=["python", "-c", writer],
                          volume_mounts=[k.V1VolumeMount(name="shared", mount_path=mount)]),
            k.V1Container(name="reader", image="ignored", command=["python", "-c", reader], working_dir=mount,
                          volume_mounts=[k.V1VolumeMount(name="shared", mount_path=mount)]),
        ]),
    ))  # fmt: skip
    _wait("pod finished", lambda: _phase(core, ns, "vols") in ("Succeeded", "Failed"))
    runner = node.find(ns, "vols")
    assert _phase(core, ns, "vols") == "Succeeded", runner.log_path("reader").read_text()
    assert f"READ from writer {mount}" in runner.log_path("reader").read_text()
    runner.done.wait(10)
    assert not Path(mount).parent.exists(), "mount points created by the agent are removed afterwards"
    assert not runner.sandbox.exists(), "emptyDir folders are removed with the pod"


def test_preemption_marks_disruption_target_and_the_job_creates_a_replacement(
    control_plane: ControlPlane, k8s_namespace: str, node: NodeAgent
):
    core, batch, ns = _core(control_plane), k.BatchV1Api(control_plane.api_client()), k8s_namespace
    # SIGTERM is ignored: the preemption must wait the grace period, then SIGKILL.
    script = "import signal, time\nsignal.signal(signal.SIGTERM, lambda *a: print('GOT' + 'TERM', flush=True))\ntime.sleep(600)"
    batch.create_namespaced_job(ns, k.V1Job(
        metadata=k.V1ObjectMeta(name="preempt-me"),
        spec=k.V1JobSpec(backoff_limit=5, template=k.V1PodTemplateSpec(spec=k.V1PodSpec(
            restart_policy="Never", termination_grace_period_seconds=2,
            containers=[k.V1Container(name="main", image="ignored", command=["python", "-c", script])])))))  # fmt: skip

    def running_pods():
        pods = core.list_namespaced_pod(ns, label_selector="job-name=preempt-me").items
        return [p for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]

    first = _wait("first pod Running", running_pods)[0]
    seen: list = []

    def watch_old_pod() -> None:  # every version of the old pod until it is deleted
        w = kubernetes.watch.Watch()
        for ev in w.stream(k.CoreV1Api(control_plane.api_client()).list_namespaced_pod, ns, timeout_seconds=60,
                           field_selector=f"metadata.name={first.metadata.name}",
                           resource_version=first.metadata.resource_version):
            seen.append(ev["object"])
            if ev["type"] == "DELETED":
                w.stop()

    watcher = threading.Thread(target=watch_old_pod, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    runner = node.preempt(ns, first.metadata.name)
    assert runner.done.wait(30)
    elapsed = time.monotonic() - t0
    assert elapsed >= 2, "the grace period was waited"
    assert "GOTTERM" in runner.log_path("main").read_text(), "SIGTERM reached the container"
    main = next(c for c in runner.regular if c.name == "main")
    assert main.exit_code == 137, "SIGKILL after the grace period"
    conds = [{c.type: (c.status, c.reason) for c in (p.status.conditions or [])} for p in seen]
    assert any(c.get("DisruptionTarget") == ("True", "PreemptionByScheduler") for c in conds)
    watcher.join(30)
    assert any(p.status.phase == "Failed" for p in seen)
    assert _phase(core, ns, first.metadata.name) is None, "the preempted pod object is deleted"
    second = _wait("replacement pod Running", running_pods)[0]
    assert second.metadata.uid != first.metadata.uid
    # kill -9 mode: no grace at all.
    t1 = time.monotonic()
    runner2 = node.preempt(ns, second.metadata.name, kill=True)
    assert runner2.done.wait(30)
    assert time.monotonic() - t1 < 2
    assert "GOTTERM" not in runner2.log_path("main").read_text()
    batch.delete_namespaced_job("preempt-me", ns, propagation_policy="Background")


def _checkout(root: Path) -> Path:
    """A checkout as a new user has one: a venv (its python a link to this interpreter), an editable install
    (a .pth file naming <checkout>/src), a console script written the way pip writes one (``/bin/sh`` launcher
    when the path has spaces), a data file."""
    import subprocess

    subprocess.run([PY, "-m", "venv", "--without-pip", str(root / ".venv")], check=True)
    site = next((root / ".venv" / "lib").glob("python3*/site-packages"))
    (site / "_editable_hello.pth").write_text(f"{root / 'src'}\n")
    (root / "src" / "hello_pkg").mkdir(parents=True)
    (root / "src" / "hello_pkg" / "__init__.py").write_text(
        "import os, sys\n"
        "def main():\n"
        "    data = sys.argv[1].split('=', 1)[1]\n"
        "    open('/tmp/written-by-container', 'w').write('x')\n"
        "    print('HELLO', sys.prefix, open(data).read().strip(), os.path.exists(os.environ['HOST_MARKER']),\n"
        "          os.getcwd(), flush=True)\n")  # fmt: skip
    (root / "data.txt").write_text("payload\n")
    python = root / ".venv" / "bin" / "python"
    launcher = (f"#!/bin/sh\n'''exec' \"{python}\" \"$0\" \"$@\"\n' '''\n" if " " in str(python)
                else f"#!{python}\n")  # what pip writes for a path with/without spaces
    hello = root / ".venv" / "bin" / "hello"
    hello.write_text(launcher + "import hello_pkg\nhello_pkg.main()\n")
    hello.chmod(0o755)
    return root


@pytest.mark.parametrize("layout", ["plain", "with spaces", "read-only parent"])
def test_a_checkout_under_tmp_stays_visible_behind_the_private_tmp(
    control_plane: ControlPlane, k8s_namespace: str, tmp_path: Path, layout: str
):
    """The demo's case (issue 12): the agent's venv and the command live in a checkout under /tmp, which every
    container's private /tmp would hide (`exec: python: not found`). They stay visible; /tmp stays private."""
    import subprocess

    parent = tmp_path / {"plain": "p", "with spaces": "my folder", "read-only parent": "ro parent"}[layout]
    checkout = _checkout(parent / ("my checkout" if layout == "with spaces" else "x"))
    host_marker = Path(f"/tmp/kresume-host-only-{uuid.uuid4().hex[:8]}")
    host_marker.write_text("host")
    mounted = False
    try:
        if layout == "read-only parent":
            subprocess.run(["mount", "--bind", str(parent), str(parent)], check=True)
            mounted = True
            subprocess.run(["mount", "-o", "remount,bind,ro", str(parent)], check=True)
            with pytest.raises(OSError):
                (parent / "probe").write_text("x")
        api = control_plane.api_client()
        settings = NodeSettings(node_name=f"dev-{uuid.uuid4().hex[:8]}", namespaces=(k8s_namespace,),
                                work_dir=tmp_path / "work", log_dir=tmp_path / "logs", resync_seconds=2,
                                bin_dir=checkout / ".venv" / "bin")  # fmt: skip
        core, ns = _core(control_plane), k8s_namespace
        with NodeAgent(api, settings) as agent:
            core.create_namespaced_pod(ns, k.V1Pod(metadata=k.V1ObjectMeta(name="co"), spec=k.V1PodSpec(
                restart_policy="Never", containers=[k.V1Container(
                    name="main", image="ignored", command=["hello"], args=[f"--data={checkout / 'data.txt'}"],
                    working_dir=str(checkout), env=[k.V1EnvVar(name="HOST_MARKER", value=str(host_marker))])])))
            _wait("pod finished", lambda: _phase(core, ns, "co") in ("Succeeded", "Failed"))
            log = agent.find(ns, "co").log_path("main").read_text()
            assert _phase(core, ns, "co") == "Succeeded", log
        api.close()
        hello = next(line for line in log.splitlines() if line.startswith("HELLO"))
        assert hello == f"HELLO {checkout / '.venv'} payload False {checkout}", log
        assert not Path("/tmp/written-by-container").exists(), "the container's /tmp is private"
        assert f"private /tmp keeps /tmp/{tmp_path.relative_to('/tmp').parts[0]}" in log
    finally:
        host_marker.unlink()
        if mounted:
            subprocess.run(["umount", "-l", str(parent)], check=False)


def test_a_command_that_is_not_found_is_a_start_error_at_once(
    control_plane: ControlPlane, k8s_namespace: str, node: NodeAgent
):
    core, ns = _core(control_plane), k8s_namespace
    core.create_namespaced_pod(ns, k.V1Pod(metadata=k.V1ObjectMeta(name="nocmd"), spec=k.V1PodSpec(
        restart_policy="Never", containers=[k.V1Container(name="main", image="ignored", command=["no-such-tool"])])))
    _wait("pod Failed", lambda: _phase(core, ns, "nocmd") == "Failed", timeout=30)
    term = core.read_namespaced_pod("nocmd", ns).status.container_statuses[0].state.terminated
    assert (term.reason, term.exit_code) == ("StartError", 128)
    assert 'exec: "no-such-tool": executable file not found in $PATH' in term.message
    runner = node.find(ns, "nocmd")
    assert "not started: StartError" in runner.log_path("main").read_text()
