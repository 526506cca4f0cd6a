"""Tests share code only through tests/support: no test module imports another test module or a
conftest, so moving or deleting a test never breaks another, and a shared helper has one home."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(path: Path, root: Path = TESTS) -> list[str]:
    """The absolute module names ``path`` imports (relative imports resolved against its package)."""
    package = ".".join(("tests", *path.relative_to(root).parent.parts))
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.append(module)
            names.extend(f"{module}.{alias.name}" for alias in node.names)
    return names


def forbidden(module: str) -> bool:
    """A test module or a conftest of this suite (``from tests.x import test_y`` counts too)."""
    parts = module.split(".")
    return parts[0] == "tests" and any(p.startswith("test_") or p == "conftest" for p in parts[1:])


def offenders(root: Path) -> list[str]:
    return [
        f"{path.relative_to(root.parent)} imports {module}"
        for path in sorted(root.rglob("*.py"))
        for module in imported_modules(path, root)
        if forbidden(module)
    ]


def test_no_test_module_imports_a_test_module_or_a_conftest() -> None:
    found = offenders(TESTS)
    assert not found, "share through tests/support instead:\n" + "\n".join(found)


def test_the_check_sees_every_form_of_such_an_import(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    (tests / "kube").mkdir(parents=True)
    (tests / "kube" / "test_a.py").write_text(
        "from tests.kube.test_b import helper\n"
        "import tests.conftest\n"
        "from tests.kube import test_c\n"
        "from .test_d import x\n"
        "from tests.support.eventually import eventually\n"
    )
    found = offenders(tests)
    assert found == [
        "tests/kube/test_a.py imports tests.kube.test_b",
        "tests/kube/test_a.py imports tests.kube.test_b.helper",
        "tests/kube/test_a.py imports tests.conftest",
        "tests/kube/test_a.py imports tests.kube.test_c",
        "tests/kube/test_a.py imports tests.kube.test_d",
        "tests/kube/test_a.py imports tests.kube.test_d.x",
    ]
