"""Launchers of the local object-store servers, driven through the real fsspec clients."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import psutil
import pytest
from _fixtures.objstores import SESSION_BUCKET, StoreBase, selected_backends

from kresume.devtools import _procs, objstores

REMOTE = ["s3-seaweedfs", "s3-moto", "gcs", "azure"]
MiB = 2**20


@pytest.fixture(params=REMOTE)
def server(request: pytest.FixtureRequest, objstore_pool) -> objstores.ObjectStoreServer:
    return objstore_pool.get(request.param)


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


# -- round trips through fsspec ----------------------------------------------------------------
def test_objstores_roundtrip_list_delete(server: objstores.ObjectStoreServer) -> None:
    bucket = server.create_bucket(f"rt-{server.name}")
    fs, root = fsspec.url_to_fs(bucket, **server.storage_options)
    fs.pipe_file(f"{root}/dir/a.txt", b"alpha")
    fs.pipe_file(f"{root}/dir/sub/b.txt", b"beta")
    fs.invalidate_cache()

    assert fs.cat_file(f"{root}/dir/a.txt") == b"alpha"
    assert sorted(fs.find(f"{root}/dir")) == [f"{root}/dir/a.txt", f"{root}/dir/sub/b.txt"]
    assert fs.info(f"{root}/dir/sub/b.txt")["size"] == 4

    fs.rm(f"{root}/dir", recursive=True)
    fs.invalidate_cache()
    # SeaweedFS keeps the emptied folder (README quirk): s3fs find() then returns it as a directory.
    left = fs.find(f"{root}/dir", detail=True)
    assert [name for name, info in left.items() if info["type"] != "directory"] == []
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{root}/dir/a.txt")


@pytest.mark.parametrize("backend", ["s3-seaweedfs", "s3-moto"])
def test_objstores_s3_multipart_20mib(backend: str, objstore_pool) -> None:
    server = objstore_pool.get(backend)
    fs, path = fsspec.url_to_fs(server.url(SESSION_BUCKET, "multipart/big.bin"), **server.storage_options)
    data = os.urandom(20 * MiB)
    with fs.open(path, "wb", block_size=5 * MiB) as f:  # 5 MiB = S3's minimum part size
        for i in range(0, len(data), MiB):
            f.write(data[i : i + MiB])
    fs.invalidate_cache()
    info = fs.info(path)
    assert info["size"] == len(data)
    assert info["ETag"].strip('"').endswith("-4"), info["ETag"]  # a multipart ETag: md5-of-md5s "-<parts>"
    assert fs.cat_file(path) == data
    assert fs.cat_file(path, start=10 * MiB, end=10 * MiB + 7) == data[10 * MiB : 10 * MiB + 7]
    fs.rm(path)


def test_objstores_create_bucket_needs_mkdir_on_gcs_and_azure(server: objstores.ObjectStoreServer) -> None:
    """Why create_bucket uses mkdir: gcsfs/adlfs makedirs(bucket) creates nothing; s3fs does."""
    name = f"mk-{server.name}"
    fs = server.filesystem()
    fs.makedirs(name, exist_ok=True)
    fs.invalidate_cache()
    assert fs.exists(name) is (server.protocol == "s3")

    assert server.create_bucket(name) == server.url(name)
    fs.invalidate_cache()
    assert fs.exists(name)
    assert server.create_bucket(name) == server.url(name)  # idempotent


def test_objstores_env_reaches_server_from_child_process(server: objstores.ObjectStoreServer) -> None:
    """``env`` alone (no storage_options) points a fresh process's fsspec client at the server."""
    url = server.url(SESSION_BUCKET, f"env/{server.name}.txt")
    code = textwrap.dedent(
        f"""
        import fsspec
        fs, path = fsspec.url_to_fs({url!r})
        fs.pipe_file(path, b"from-env")
        print(fs.cat_file(path).decode())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "STORAGE_EMULATOR"))}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**env, **server.env}, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "from-env"


def test_objstores_seaweedfs_checks_signatures(seaweedfs_s3: objstores.ObjectStoreServer) -> None:
    """Auth is on (weed mini takes the identity from its env), so a client must really sign."""
    opts = {**seaweedfs_s3.storage_options, "key": "wrong", "secret": "wrong", "skip_instance_cache": True}
    fs, path = fsspec.url_to_fs(seaweedfs_s3.url(SESSION_BUCKET, "auth/x"), **opts)
    with pytest.raises(PermissionError):
        fs.pipe_file(path, b"1")


def test_objstores_bucket_name_checked(moto_s3: objstores.ObjectStoreServer) -> None:
    with pytest.raises(ValueError, match="3-63 lowercase"):
        moto_s3.create_bucket("b1")


# -- the store_base fixture --------------------------------------------------------------------
def test_objstores_store_base_is_fresh_and_usable(store_base: StoreBase) -> None:
    assert store_base.backend in selected_backends()
    fs, root = store_base.fs()
    assert fs.find(root) == []
    if store_base.backend == "file":  # local files need their folder; object stores have none
        fs.makedirs(f"{root}/x", exist_ok=True)
    fs.pipe_file(f"{root}/x/y.bin", b"\x00\x01")
    fs.invalidate_cache()
    target = fsspec.url_to_fs(store_base.join("x", "y.bin"), **store_base.options)[1]
    assert fs.cat_file(target) == b"\x00\x01"


def test_objstores_selected_backends_parses_env() -> None:
    assert selected_backends("") == ["file", "memory", "s3-seaweedfs", "s3-moto", "gcs", "azure", "s3-fsspec"]
    assert selected_backends("azure-fsspec") == ["azure-fsspec"]
    assert selected_backends(" gcs, file ") == ["gcs", "file"]
    with pytest.raises(ValueError, match="unknown backend.*'s4'"):
        selected_backends("s3-moto,s4")


# -- failures are loud and fast, never hangs ---------------------------------------------------
@pytest.fixture
def http_stranger() -> Iterator[int]:
    """Another program answering HTTP on a port, so a start there must fail, not look ready."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("backend", REMOTE)
def test_objstores_port_taken_fails_with_log_tail(backend: str, http_stranger: int) -> None:
    server = objstores.SERVERS[backend](port=http_stranger, start_timeout_s=30)
    t0 = time.monotonic()
    with pytest.raises(_procs.ProcessStartError) as err:
        server.start()
    assert time.monotonic() - t0 < 30  # it exited; we did not wait for the timeout
    message = str(err.value)
    assert f"port {http_stranger}" in message
    assert "exited with code" in message
    assert any(word in message.lower() for word in ("in use", "eaddrinuse", "not available")), message
    assert not server.running and server.tmpdir is None


def test_objstores_azurite_missing_names_install_script(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KRESUME_AZURITE", str(tmp_path / "nope" / "azurite-blob"))
    with pytest.raises(_procs.ExecutableNotFoundError, match="KRESUME_AZURITE.*install-azurite.sh"):
        objstores.AzuriteServer().start()

    monkeypatch.delenv("KRESUME_AZURITE")
    monkeypatch.setattr(objstores.servers, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"scripts/install-azurite\.sh"):
        objstores.AzuriteServer().start()


def test_objstores_not_ready_times_out_and_kills(tmp_path: Path) -> None:
    code = "import sys, time; print('booting slowly', flush=True); time.sleep(120)"
    proc = _procs.ManagedProcess(
        "sleeper", [sys.executable, "-c", code], tmp_path / "log", port=_procs.free_ports()[0],
        start_timeout_s=1.5,
    )
    with pytest.raises(_procs.ProcessStartError, match=r"(?s)not ready after 2 s.*booting slowly"):
        proc.start()
    assert not proc.running


def test_objstores_stranger_on_port_is_not_mistaken_for_ready(tmp_path: Path, http_stranger: int) -> None:
    """The probe gets answers from a stranger; the child never listens, so start must time out."""
    proc = _procs.ManagedProcess(
        "silent", [sys.executable, "-c", "import time; time.sleep(120)"], tmp_path / "log", port=http_stranger,
        ready=_procs.http_ready(f"http://127.0.0.1:{http_stranger}/"), start_timeout_s=1.5,
    )
    assert proc.ready is not None and proc.ready()  # the stranger does answer HTTP
    with pytest.raises(_procs.ProcessStartError, match="not ready"):
        proc.start()
    assert not proc.running


def test_objstores_missing_executable(tmp_path: Path) -> None:
    proc = _procs.ManagedProcess("ghost", [str(tmp_path / "ghost")], tmp_path / "log")
    with pytest.raises(_procs.ExecutableNotFoundError, match="ghost"):
        proc.start()


# -- nothing is left behind --------------------------------------------------------------------
def test_objstores_stop_kills_and_cleans() -> None:
    server = objstores.MotoServer().start()
    pid, tmpdir = server._proc.pid, server.tmpdir  # type: ignore[union-attr]
    assert tmpdir is not None and tmpdir.is_dir()
    server.stop()
    server.stop()  # idempotent
    assert _gone(pid)
    assert not tmpdir.exists()


@pytest.mark.parametrize("how", ["ctrl-c", "sigkill"])
def test_objstores_no_server_outlives_its_parent(how: str) -> None:
    """Ctrl-C (KeyboardInterrupt -> atexit) and SIGKILL (PR_SET_PDEATHSIG) both take the server down."""
    code = textwrap.dedent(
        """
        import os, signal, sys, time
        from kresume.devtools import objstores
        s = objstores.MotoServer().start()
        print(s._proc.pid, s.tmpdir, flush=True)
        if sys.argv[1] == "ctrl-c":
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", code, how], stdout=subprocess.PIPE, text=True)
    try:
        pid_text, tmpdir = parent.stdout.readline().split()  # type: ignore[union-attr]
        server_pid = int(pid_text)
        if how == "sigkill":
            parent.kill()
        parent.wait(timeout=30)
    finally:
        parent.kill()
    assert _gone(server_pid), f"server pid {server_pid} survived {how} of its parent"
    if how == "ctrl-c":
        assert parent.returncode != 0 and not Path(tmpdir).exists()
    else:  # nothing in the killed parent could remove the temp folder
        shutil.rmtree(tmpdir, ignore_errors=True)
