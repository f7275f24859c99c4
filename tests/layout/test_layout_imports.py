"""The product does not depend on development code (issue 13 item 2).

Every module of ``src/kresume`` outside ``kresume.devtools`` is parsed (not imported) and its imports listed,
including imports inside functions (a lazy import ships just the same) and ``importlib.import_module("…")``
calls with a literal name. None may reach ``kresume.devtools``, test code or test-only libraries.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "kresume"
#: Top-level names only tests and dev tools may import (dev extra, test fixtures).
TEST_ONLY = ("pytest", "_fixtures", "moto", "helm_python", "kubernetes_validate")


def module_name(path: Path) -> str:
    """``src/kresume/operator/admission.py`` -> ``kresume.operator.admission`` (packages: their ``__init__``)."""
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Absolute names of every module ``source`` (the text of module ``module``) imports, anywhere in it."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def product_modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "devtools" not in p.relative_to(SRC).parts)


def forbidden(names: set[str]) -> list[str]:
    return sorted(n for n in names if n == "kresume.devtools" or n.startswith("kresume.devtools.")
                  or n.split(".")[0] in TEST_ONLY)


@pytest.mark.parametrize("path", product_modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_product_module_does_not_import_dev_or_test_code(path: Path):
    names = imported_names(path.read_text(), module_name(path), is_package=path.name == "__init__.py")
    assert forbidden(names) == [], f"{path.relative_to(SRC.parent)} imports development/test code"


def test_the_check_sees_every_way_of_importing():
    lazy = "def f():\n    from kresume.devtools import pki\n"
    relative = "from ..devtools import cluster\n"
    dynamic = "import importlib\nimportlib.import_module('kresume.devtools.chart')\n"
    plain = "import pytest\nfrom kresume import contract\n"
    assert forbidden(imported_names(lazy, "kresume.operator.runner")) == ["kresume.devtools", "kresume.devtools.pki"]
    assert forbidden(imported_names(relative, "kresume.operator.runner")) == [
        "kresume.devtools", "kresume.devtools.cluster"]
    assert forbidden(imported_names(dynamic, "kresume.operator.runner")) == ["kresume.devtools.chart"]
    assert forbidden(imported_names(plain, "kresume.x")) == ["pytest"]
    assert len(product_modules()) > 50 and not any("devtools" in str(p) for p in product_modules())
