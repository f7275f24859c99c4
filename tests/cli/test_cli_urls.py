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
