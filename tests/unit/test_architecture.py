"""The pure core stays pure: no Kubernetes client and no kopf in api, contracts, render, policies."""

from __future__ import annotations

import subprocess
import sys

PURE = ["twlegal.api", "twlegal.api.validation", "twlegal.contracts", "twlegal.render", "twlegal.policies",
        "twlegal.docs.consistency", "twlegal.docs.history", "twlegal.docs.card", "twlegal.docs.commands", "twlegal.cli"]


def test_pure_modules_import_without_kubernetes_or_kopf():
    # Poison the imports: any attempt to import them fails loudly.
    code = (
        "import sys\n"
        "for banned in ('kubernetes', 'kopf', 'lightkube'):\n"
        "    sys.modules[banned] = None\n"
        + "".join(f"import {module}\n" for module in PURE)
        + "print('pure')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "pure"
