"""Run URLs and storage options a command cannot use: exit 2 (usage) with one line naming the problem
and the fix (a first-time user got exit 1 with backend internals for unknown schemes and options, and
"no credentials" for a URL without a bucket)."""

from __future__ import annotations

import os

import pytest

#: Hides gcsfs from the CLI process as if `kresume[gcs]` were not installed (imported at start-up via
#: PYTHONPATH's sitecustomize; importlib then fails to find the module).
HIDE_GCSFS = '''
import sys
class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name == "gcsfs" or name.startswith("gcsfs."):
            raise ModuleNotFoundError("No module named 'gcsfs'", name=name)
        return None
sys.meta_path.insert(0, _Hide())
'''


def _one_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kresume: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("url,needle", [
    ("fille://x/ns/run", "unknown protocol 'fille'; did you mean file://?"),
    ("s4://bucket/ns/run", "unknown protocol 's4'; did you mean s3://?"),
    ("foo://bucket/ns/run", "unknown protocol 'foo'"),
    ("s3://", "the URL has no bucket"),
    ("gs:///ns/run", "the URL has no bucket"),
    ("az://", "the URL has no container"),
    ("file://", "the URL has no path"),
])
def test_unusable_urls_are_usage_errors(cli, tmp_path, url, needle):
    proc = cli("ls", url, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc)
    assert needle in line
    if "unknown protocol" in needle:
        assert "installed here: s3://, gs://, az://, abfs://, file://, memory://" in line


def test_unknown_scheme_names_the_extra_of_a_missing_backend(cli, tmp_path):
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "sitecustomize.py").write_text(HIDE_GCSFS)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "hide"), os.environ.get("PYTHONPATH")]))}
    line = _one_line(proc := cli("latest", "foo://b/ns/run", cwd=tmp_path, env=env))
    assert proc.returncode == 2 and "for gs:// pip install 'kresume[gcs]'" in line
    assert "gs://" not in line.split("installed here: ")[1].split(";")[0]
    line = _one_line(proc := cli("latest", "gs://b/ns/run", cwd=tmp_path, env=env))
    assert proc.returncode == 2 and "no filesystem for protocol 'gs' is installed" in line
    assert "pip install 'kresume[gcs]'" in line


def test_storage_option_the_backend_refuses_is_a_usage_error(cli, moto_run_url, tmp_path):
    url, env = moto_run_url
    proc = cli("ls", url, "-o", "bogus_opt=1", cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc)
    assert "'bogus_opt' is not accepted by the s3:// backend" in line and "remove -o bogus_opt" in line


def test_no_bucket_is_refused_before_any_request(cli, tmp_path):
    # No credentials in the environment: the old behaviour was "s3:/manifests: no credentials".
    proc = cli("ls", "s3://", cwd=tmp_path, env={"AWS_EC2_METADATA_DISABLED": "true"})
    assert proc.returncode == 2 and "no credentials" not in proc.stderr


COMMANDS = {
    "ls": lambda url, tmp: ("ls", url),
    "latest": lambda url, tmp: ("latest", url),
    "verify": lambda url, tmp: ("verify", url),
    "restore": lambda url, tmp: ("restore", url, str(tmp / "dest")),
    "prune": lambda url, tmp: ("prune", url, "--keep-last", "1"),
    "commit": lambda url, tmp: ("commit", str(tmp / "x.ckpt"), url),
    "mark-bad": lambda url, tmp: ("mark-bad", url, "some-id"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_scheme_less_and_one_slash_urls_are_usage_errors_in_every_command(cli, tmp_path, command):
    """Before, `kresume commit x.ckpt s3:/bucket/run/` and `bucket/run/` exited 0 after writing a
    local folder named `s3:`; the chart's schema refused the same strings."""
    import torch

    torch.save({"w": torch.zeros(1)}, tmp_path / "x.ckpt")
    for url, fix in (("s3:/bucket/run/", "use s3://bucket/run/"), ("bucket/run/", "write s3://bucket/run/")):
        proc = cli(*COMMANDS[command](url, tmp_path), cwd=tmp_path)
        assert proc.returncode == 2, (url, proc.stderr)
        assert fix in _one_line(proc), proc.stderr
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "bucket").exists()


def test_sidecar_refuses_the_same_urls(tmp_path):
    """The sidecar checks its run URL with the same rule before it starts (exit 2, one line)."""
    import subprocess
    import sys

    for url in ("s3:/bucket/ns/run/", "bucket/ns/run/"):
        proc = subprocess.run([sys.executable, "-m", "kresume.sidecar", "--watch", str(tmp_path), "--run-url", url,
                               "--metrics-port", "-1"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("kresume sidecar: --run-url / KRESUME_RUN_URL: ") and "s3://bucket/ns/run/" in proc.stderr
