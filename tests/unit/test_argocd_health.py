"""The Argo CD health check, run by a real Lua interpreter on statuses captured from the real
control plane, in the layout Argo CD's own health_test.yaml files use."""

from __future__ import annotations

from pathlib import Path

import lupa
import pytest
import yaml

CHECK = Path(__file__).resolve().parents[2] / "charts/twlegal/files/argocd/twlegal.io/LegalModelRelease"
TESTS = yaml.safe_load((CHECK / "health_test.yaml").read_text(encoding="utf-8"))["tests"]


def health(obj: dict) -> dict:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute((CHECK / "health.lua").read_text(encoding="utf-8"))
    return dict(result.items())


def test_every_phase_is_covered():
    phases = {yaml.safe_load((CHECK / t["inputPath"]).read_text()).get("status", {}).get("phase") for t in TESTS}
    assert phases >= {
        "Pending",
        "Training",
        "Evaluating",
        "RollingOut",
        "Serving",
        "Superseded",
        "Failed",
        "Rejected",
        "RolledBack",
    }


@pytest.mark.parametrize("case", TESTS, ids=[t["inputPath"] for t in TESTS])
def test_health(case):
    obj = yaml.safe_load((CHECK / case["inputPath"]).read_text(encoding="utf-8"))
    assert health(obj) == case["healthStatus"]


def test_the_argocd_cm_example_carries_the_same_script():
    example = Path(__file__).resolve().parents[2] / "examples" / "argocd" / "argocd-cm-patch.yaml"
    data = yaml.safe_load(example.read_text(encoding="utf-8"))["data"]
    assert data["resource.customizations.health.twlegal.io_LegalModelRelease"] == (CHECK / "health.lua").read_text(
        encoding="utf-8"
    )
