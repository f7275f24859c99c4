"""Peak RSS of the sidecar process while it commits one large checkpoint to SeaweedFS S3.

    .venv/bin/python bench/sidecar_rss.py [--gib 2] [--interval 0.05] [--keep]

Starts SeaweedFS (``kresume.devtools.objstores``) on loopback, writes a ``--gib`` GiB safetensors file
(streamed: header, then random 64 MiB blocks; never held in memory) outside the watched folder,
starts ``python -m kresume.sidecar`` as a separate process against ``s3://`` (the real s3fs path),
waits for it to be ready, renames the file into the watched folder, and polls the sidecar's RSS
with psutil every ``--interval`` s until the commit is logged. Prints one JSON line: baseline RSS
(ready, idle), peak RSS, upload seconds and MiB/s, the exact sidecar command and the settings.
Target (issue 3): peak ≤ 128 MiB. Exits 1 when the commit fails or the peak is over the target.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from kresume.devtools import objstores

BUCKET = "kresume-bench"
TARGET_MIB = 128


def write_safetensors(path: Path, size: int, block: int = 64 * 2**20) -> None:
    """A valid safetensors file of ``size`` data bytes (one U8 tensor), written in ``block`` pieces."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    chunk = os.urandom(block)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        left = size
        while left:
            n = min(left, block)
            f.write(chunk[:n])
            left -= n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=2.0, help="checkpoint size, GiB")
    ap.add_argument("--interval", type=float, default=0.05, help="RSS poll period, s")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (logs) afterwards")
    ap.add_argument("sidecar_args", nargs="*", help="extra sidecar flags (after --)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kresume-rss-"))
    watch, staging = tmp / "watch", tmp / "staging"
    watch.mkdir()
    staging.mkdir()
    server = objstores.SERVERS["s3-seaweedfs"]()
    proc = None
    try:
        server.start()
        server.create_bucket(BUCKET)
        size = int(a.gib * 2**30)
        src = staging / "model-step_100.safetensors"
        t = time.monotonic()
        write_safetensors(src, size)
        write_s = time.monotonic() - t
        url = server.url(BUCKET, "ns/rss-run") + "/"
        argv = [sys.executable, "-m", "kresume.sidecar", "--watch", str(watch), "--run-url", url,
                "--metrics-port", "-1", "--settle-seconds", "1", *a.sidecar_args]
        env = {**os.environ, **server.env, "KRESUME_STORAGE_OPTIONS": json.dumps(server.storage_options),
               "KRESUME_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
        log = tmp / "sidecar.log"
        with open(log, "w") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        ps = psutil.Process(proc.pid)

        def lines() -> list[dict]:
            out = []
            for line in log.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
            return out

        def wait(pred, timeout: float) -> dict:
            end = time.monotonic() + timeout
            while time.monotonic() < end and proc.poll() is None:
                for r in lines():
                    if pred(r):
                        return r
                time.sleep(0.1)
            raise SystemExit(f"sidecar: no matching log line (rc={proc.poll()}):\n{log.read_text()[-3000:]}")

        wait(lambda r: r.get("msg", "").startswith("watching"), 120)
        time.sleep(1.0)
        baseline = ps.memory_info().rss
        src.rename(watch / src.name)
        peak, t0, done = baseline, time.monotonic(), None
        while done is None:
            if proc.poll() is not None:
                raise SystemExit(f"sidecar exited rc={proc.returncode}:\n{log.read_text()[-3000:]}")
            peak = max(peak, ps.memory_info().rss)
            for r in lines():
                msg = r.get("msg", "")
                if msg.startswith("committed"):
                    done = r
                elif "failed" in msg and r.get("level") in ("warning", "error"):
                    print(msg, file=sys.stderr)
            time.sleep(a.interval)
        upload_s = time.monotonic() - t0
        result = {
            "peak_rss_mib": round(peak / 2**20, 1), "baseline_rss_mib": round(baseline / 2**20, 1),
            "target_mib": TARGET_MIB, "checkpoint_gib": a.gib, "commit_seconds": round(upload_s, 1),
            "mib_per_s": round(size / 2**20 / upload_s, 1), "write_seconds": round(write_s, 1),
            "store": "SeaweedFS S3 via s3fs", "sidecar_command": shlex.join(argv),
            "storage_options": server.storage_options, "poll_interval_s": a.interval,
            "cpu_count": psutil.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 1),
        }
        print(json.dumps(result))
        return 0 if peak <= TARGET_MIB * 2**20 else 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()
        if not a.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
