"""The house rules, kept by tools rather than by reviewers: import layers (import-linter), lint and
format (ruff), strict types over the pure core (mypy), and a product wheel without dev code."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PURE = [
    "twlegal.api",
    "twlegal.api.validation",
    "twlegal.contracts",
    "twlegal.render",
    "twlegal.policies",
    "twlegal.policies.consistency",
    "twlegal.docs.history",
    "twlegal.docs.card",
    "twlegal.cli",
]


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_pure_modules_import_without_kubernetes_or_kopf():
    # Poison the imports: any attempt to import them fails loudly (the CLI imports them lazily).
    code = (
        "import sys\n"
        "for banned in ('kubernetes', 'kopf', 'lightkube', 'twlegal_dev'):\n"
        "    sys.modules[banned] = None\n" + "".join(f"import {module}\n" for module in PURE) + "print('pure')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "pure"


def test_import_contracts_hold():
    proc = run(str(BIN / "lint-imports"), "--no-cache")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout, proc.stdout


def test_ruff_lint_is_clean():
    proc = run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_clean():
    proc = run(str(BIN / "ruff"), "format", "--check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pure_core_is_strictly_typed():
    proc = run(str(BIN / "mypy"), "--no-incremental")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def product_wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), ".")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return next(out.glob("twlegal-*.whl"))


def test_product_wheel_has_no_dev_or_test_code(product_wheel: Path):
    names = zipfile.ZipFile(product_wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {"twlegal", "twlegal_trainer", "twlegal_server"} <= top, top
    leaked = [
        n
        for n in names
        if n.startswith(("twlegal_dev/", "tests/"))
        or "devcluster" in n
        or n.endswith(("fake_kubelet.py", "build-binaries.sh"))
    ]
    assert not leaked, leaked
    assert "twlegal/py.typed" in names
