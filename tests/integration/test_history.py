"""`twlegal history` and `twlegal card` against the real control plane, on releases the operator
drove to Serving, Superseded, Rejected and Failed.

With TWLEGAL_CAPTURE_HISTORY_DIR set, the releases are kept as the API server returned them: the
golden tests of the unit tier (tests/unit/test_docs.py) run on these captures
(tests/fixtures/releases/captured/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from huggingface_hub import ModelCard

from tests.integration.test_lifecycle import conditions, events, release_doc, wait_phase
from tests.support.cluster import Cluster
from twlegal import yamlio

TWLEGAL = [sys.executable, "-m", "twlegal.cli"]


def twlegal(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*TWLEGAL, *args],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def capture(cluster: Cluster, namespace: str, names: list[str]) -> None:
    directory = os.environ.get("TWLEGAL_CAPTURE_HISTORY_DIR")
    if not directory:
        return
    Path(directory).mkdir(parents=True, exist_ok=True)
    for name in names:
        obj = cluster.get_json("lmr", name, "-n", namespace)
        obj["metadata"].pop("managedFields", None)
        obj["metadata"].get("annotations", {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
        (Path(directory) / f"{name}.yaml").write_text(yamlio.dump(obj))


def test_history_and_card_of_a_target_from_the_cluster(cluster: Cluster, operator, fake_node, namespace):
    v1 = release_doc(namespace, "tiny-v1", "v0.1.0")
    v1["spec"]["card"] = {"license": "apache-2.0", "language": ["zh"], "summary": "first tiny release"}
    cluster.apply(v1)
    wait_phase(cluster, namespace, "tiny-v1", "Serving")

    # v0.2.0 also trains on a hub dataset given without a revision: flagged, and still served.
    v2 = release_doc(namespace, "tiny-v2", "v0.2.0")
    v2["spec"]["hub"] = {"offline": False}
    v2["spec"]["datasets"].append({"name": "lianghsun/tw-legal-nlp", "format": "messages"})
    v2["spec"]["card"] = {"license": "apache-2.0", "summary": "adds tw-legal-nlp"}
    cluster.apply(v2)
    st2 = wait_phase(cluster, namespace, "tiny-v2", "Serving")
    wait_phase(cluster, namespace, "tiny-v1", "Superseded")
    pinned = conditions(st2)["InputsPinned"]
    assert pinned["status"] == "False" and pinned["reason"] == "UnpinnedDataset"
    assert "lianghsun/tw-legal-nlp" in pinned["message"]
    assert "UnpinnedDataset" in events(cluster, namespace, "tiny-v2")

    fake_node.behave("tiny-v3", score=12.5)
    cluster.apply(release_doc(namespace, "tiny-v3", "v0.3.0"))
    fake_node.behave("tiny-v4", training="fail")
    cluster.apply(release_doc(namespace, "tiny-v4", "v0.4.0"))
    wait_phase(cluster, namespace, "tiny-v3", "Rejected")
    wait_phase(cluster, namespace, "tiny-v4", "Failed")
    assert conditions(wait_phase(cluster, namespace, "tiny-v1", "Superseded"))["InputsPinned"]["status"] == "True"
    capture(cluster, namespace, ["tiny-v1", "tiny-v2", "tiny-v3", "tiny-v4"])

    table = twlegal(cluster, "history", "tiny-legal", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["VERSION", "DATE", "PHASE", "SCORE", "CHANGES", "REASON"]
    assert [line.split()[:4:2] for line in table[1:]] == [
        ["v0.4.0", "Failed"],
        ["v0.3.0", "Rejected"],
        ["v0.2.0", "Serving"],
        ["v0.1.0", "Superseded"],
    ]
    assert "KeyError: 'messages' in dataset 0" in table[1]
    assert "score 12.5 is below minScore 30" in table[2]
    assert "superseded by tiny-v2" in table[4]

    rows = json.loads(twlegal(cluster, "history", "twlegal/tiny-legal", "-n", namespace, "-o", "json").stdout)
    by_version = {r["version"]: r for r in rows["releases"]}
    assert by_version["v0.1.0"]["supersededBy"] == "tiny-v2" and by_version["v0.1.0"]["servedUntil"]
    assert by_version["v0.3.0"]["score"] == 12.5 and by_version["v0.2.0"]["score"] == 55

    text = twlegal(cluster, "card", "tiny-v2", "-n", namespace).stdout
    card = ModelCard(text)
    assert card.data.license == "apache-2.0" and card.data.datasets == ["lianghsun/tw-legal-nlp"]
    [result] = card.data.eval_results
    assert result.metric_value == 55 and result.dataset_name == "benchmarks/tw-legal-mc.jsonl"
    assert "**UnpinnedDataset:**" in text and "| Train loss (final) | 0.4200 |" in text
    assert "--revision v0.2.0" in text and "| v0.3.0 | Rejected |" in text
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["model-index"][0]["name"] == "twlegal/tiny-legal"
