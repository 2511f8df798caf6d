"""Command-line tools the tests use that must not share the project's environment (their pins clash
with it), each installed once into a virtual environment of its own under ~/.cache/twlegal/tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twlegal_dev.binaries import cache_dir

TOOLS = {"checkov": "checkov==3.3.30"}


def tool(name: str) -> Path:
    requirement = TOOLS[name]
    venv = cache_dir() / "tools" / requirement.replace("==", "-")
    exe = venv / "bin" / name
    if not (venv / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", requirement], check=True, capture_output=True, text=True
        )
        (venv / ".complete").touch()
    return exe
