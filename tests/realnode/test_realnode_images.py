"""Image inputs are keyed by content: an unchanged tree never rebuilds, any change does (pure; no builds)."""

from __future__ import annotations

from pathlib import Path

from kresume.devtools.kubelet import build


def _tree(root: Path) -> Path:
    (root / "src" / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "src" / "pkg" / "a.py").write_text("A = 1\n")
    (root / "Dockerfile").write_text("FROM x\n")
    return root


def test_tree_key_follows_contents_paths_and_mode(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    paths = [root / "Dockerfile", root / "src"]
    k0 = build.tree_key(paths, root=root)
    (root / "src" / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    assert build.tree_key(paths, root=root) == k0, "__pycache__ is not an input"
    (root / "src" / "pkg" / "a.py").write_text("A = 2\n")
    k1 = build.tree_key(paths, root=root)
    assert k1 != k0
    (root / "src" / "pkg" / "a.py").chmod(0o755)
    assert build.tree_key(paths, root=root) != k1
    (root / "src" / "pkg" / "a.py").rename(root / "src" / "pkg" / "b.py")
    assert build.tree_key(paths, root=root) not in (k0, k1)
    assert build.tree_key(paths, root=root, extra="other base") != build.tree_key(paths, root=root)


def test_host_trust_mounts_only_existing_files_read_only() -> None:
    for volume in build.host_trust():
        src, dst, mode = volume.split(":")
        assert src == dst and mode == "ro" and Path(src).is_file()
