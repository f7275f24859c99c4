"""The fast path of ``kresume restore`` / ``latest`` (kresume.cli.fast) means what typer means.

For every command line of the corpus, ``fast.parse`` either declines (``None``: the typer app parses it, so
help and usage errors are typer's own) or gives exactly the parameters and root options typer's own parse
gives, seen by running the typer app (in process) with the command bodies replaced by a recorder.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kresume.cli import fast, oneshot, session

URL = "s3://bucket/runs/ns/run/"

ACCEPTED = [
    (["restore", URL, "out"], {}),
    (["restore", URL, "out", "--no-progress", "--progress-every", "0"], {}),
    (["restore", "--no-progress", URL, "--progress-every=2.5", "out"], {}),
    (["restore", URL, "out", "-o", "key=k", "-o", 'client_kwargs={"endpoint_url": "http://127.0.0.1:1"}',
      "--storage-option=anon=true", "-o", "empty="], {}),
    (["restore", URL, "out", "-c", "x-20261202T000000000000Z-abcdef", "--rank", "3", "--progress"], {}),
    (["restore", URL, "out", "--checkpoint=last.ckpt", "--rank=0", "--cache-dir", "/var/cache/kresume",
      "--result-file", "/dev/termination-log"], {}),
    (["restore", URL, "out"], {"KRESUME_CACHE_DIR": "/node/cache"}),
    (["restore", URL, "out", "--cache-dir", "/flag/wins"], {"KRESUME_CACHE_DIR": "/node/cache"}),
    (["restore", URL, "out"], {"KRESUME_CACHE_DIR": ""}),
    (["--debug", "restore", URL, "out"], {}),
    (["--attempts", "5", "--timeout", "0", "restore", URL, "out"], {}),
    (["--attempts=1", "--timeout=12.5", "restore", URL, "-"], {}),
    (["restore", URL, "out"], {"KRESUME_ATTEMPTS": "7", "KRESUME_TIMEOUT": "3", "KRESUME_DEBUG": "1"}),
    (["--attempts", "2", "restore", URL, "out"], {"KRESUME_ATTEMPTS": "7"}),
    (["restore", URL, "out"], {"KRESUME_DEBUG": "true"}),
    (["restore", URL, "out"], {"KRESUME_DEBUG": "0"}),
    (["restore", URL, "out"], {"KRESUME_DEBUG": "", "KRESUME_TIMEOUT": ""}),
    (["restore", "", "out"], {}),
    (["latest", URL], {}),
    (["latest", URL, "--json", "-o", "anon=false"], {}),
    (["--timeout", "1", "latest", "--json", URL], {"KRESUME_ATTEMPTS": "4"}),
]

DECLINED = [
    ["restore", "--help"], ["restore", URL, "out", "-h"], ["--help"], ["-h", "restore", URL, "out"], [],
    ["restore"], ["restore", URL], ["restore", URL, "out", "extra"], ["restore", URL, "out", "--nope"],
    ["restore", URL, "out", "--rank", "-1"], ["restore", URL, "out", "--rank", "1.5"], ["restore", URL, "out", "--rank"],
    ["restore", URL, "out", "--progress-every", "-2"], ["restore", URL, "out", "--progress-every", "1e3"],
    ["restore", URL, "out", "-c", "a", "-c", "b"], ["restore", URL, "out", "--progress", "--no-progress"],
    ["restore", URL, "out", "--progress=yes"], ["restore", URL, "out", "-o", "novalue"],
    ["restore", URL, "out", "-o", "=v"], ["restore", URL, "out", "-o", "k={bad"],
    ["restore", URL, "out", "-okey=v"], ["restore", URL, "--", "out"], ["restore", URL, "-x"],
    ["--attempts", "0", "restore", URL, "out"], ["--attempts", "two", "restore", URL, "out"],
    ["restore", URL, "out", "--debug"], ["--debug=1", "restore", URL, "out"], ["ls", URL], ["commit", "a", URL],
    ["latest"], ["latest", URL, "--json", "--json"], ["latest", URL, "--rank", "1"],
]
DECLINED_ENV = [{"KRESUME_ATTEMPTS": "0"}, {"KRESUME_ATTEMPTS": "x"}, {"KRESUME_TIMEOUT": "-1"},
                {"KRESUME_DEBUG": "maybe"}]


def typer_parse(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> fast.Call:
    """What the typer app makes of ``argv``: the body's parameters and the root options, recorded."""
    from kresume.cli import app

    seen: dict = {}
    monkeypatch.setattr(session, "configure", lambda debug, attempts, timeout: seen.update(
        debug=debug, attempts=attempts, timeout=timeout))
    for name in ("restore", "latest"):
        monkeypatch.setattr(oneshot, name, lambda *a, _name=name, **k: seen.update(command=_name, args=a))
    for var in ("KRESUME_DEBUG", "KRESUME_ATTEMPTS", "KRESUME_TIMEOUT", "KRESUME_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(app, argv, env=env)
    assert result.exit_code == 0, (argv, result.output)
    body = _BODIES[seen["command"]]
    params = dict(zip(inspect.signature(body).parameters, seen["args"], strict=True))
    return fast.Call(seen["command"], params, seen["debug"], seen["attempts"], seen["timeout"])


_BODIES = {"restore": oneshot.restore, "latest": oneshot.latest}  # the real ones (the test replaces them)


@pytest.mark.parametrize(("argv", "env"), ACCEPTED, ids=lambda v: " ".join(v) if isinstance(v, list) else str(v))
def test_the_fast_path_parses_as_typer_does(argv, env, monkeypatch):
    call = fast.parse(argv, env)
    assert call is not None, argv
    assert call == typer_parse(argv, env, monkeypatch)


@pytest.mark.parametrize("argv", DECLINED, ids=" ".join)
def test_anything_unusual_is_left_to_typer(argv):
    assert fast.parse(argv, {}) is None


@pytest.mark.parametrize("env", DECLINED_ENV, ids=str)
def test_an_environment_value_typer_would_refuse_is_left_to_typer(env):
    assert fast.parse(["restore", URL, "out"], env) is None


def test_paths_are_paths_and_storage_options_stay_strings():
    call = fast.parse(["restore", URL, "out", "--cache-dir", "c", "-o", "anon=true"], {})
    assert call is not None
    assert call.params["dest"] == Path("out") and call.params["cache_dir"] == Path("c")
    assert call.params["storage_option"] == ["anon=true"]  # decoded by the body, as on the typer path
