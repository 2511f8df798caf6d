"""`make demo`: a tiny release from `kubectl apply` to a chat answer, on a local single-node
cluster that stays up afterwards for you to explore (`twlegal-dev cluster down` stops it).

Steps: start (or reuse) the cluster with a real node; build the CPU images and load them; `helm
install` the chart; create the model volume and copy the tiny base model and data into it; apply
examples/release-tiny-cpu.yaml; follow it with `twlegal watch` until it serves; ask it a question.

The cluster runs beside the e2e tier's (`make test` may run while it is up), and `twlegal-dev
cluster down` then `make demo` again restarts it with its data. When the operator is not ready
(a crash loop, a missing image) the demo stops at once and prints why, instead of waiting.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from twlegal_dev import ROOT, binaries
from twlegal_dev import scenario as steps  # the e2e tier's steps, run once here

CLUSTER = "twlegal"
RELEASE = ROOT / "examples" / "release-tiny-cpu.yaml"


def say(message: str) -> None:
    print(f"== {message}", flush=True)


def main() -> int:
    twlegal_dev = str(Path(sys.executable).parent / "twlegal-dev")
    say(
        f"twlegal-dev cluster up --node --no-crd --name {CLUSTER}  (control plane + containerd, kubelet, kube-proxy; the chart installs the CRD)"
    )
    if (
        subprocess.run(
            [twlegal_dev, "cluster", "up", "--node", "--no-crd", "--name", CLUSTER], stdout=subprocess.DEVNULL
        ).returncode
        != 0
    ):
        return 1  # it said why
    e2e = steps.attach_local(binaries.cache_dir() / "clusters" / CLUSTER)
    say("building the CPU images (trainer, server, operator) and loading them into the node")
    images = steps.build_images()
    e2e.load_images(list(images.values()))
    say("helm install twlegal charts/twlegal --namespace twlegal-system")
    try:
        steps.install_chart(e2e, images)
    except steps.OperatorNotReady as exc:
        print(f"{exc}\n(logs of the cluster's processes: {e2e.cluster.kubeconfig.parent / 'logs'})", file=sys.stderr)
        return 1
    say(
        f"model volume: PVC {steps.CLAIM} in namespace {steps.NAMESPACE}, seeded with a tiny Llama and the fixture data"
    )
    steps.create_model_volume(e2e, images)
    steps.seed_volume(e2e)
    say(f"kubectl apply -f {RELEASE.relative_to(ROOT)}")
    e2e.cluster.kubectl("apply", "-f", str(RELEASE))
    name = steps.load_release(RELEASE)["metadata"]["name"]
    say(f"twlegal watch {name} -n {steps.NAMESPACE}  (progress from the training pod; exits 0 once it serves)")
    watch = subprocess.Popen(
        [sys.executable, "-m", "twlegal.cli", "watch", name, "-n", steps.NAMESPACE, "--timeout", "1800"],
        env={**os.environ, "KUBECONFIG": str(e2e.cluster.kubeconfig)},
    )
    while watch.poll() is None:
        problem = steps.operator_problem(e2e)
        if problem:  # nobody would move the release on
            watch.terminate()
            print(f"the operator stopped working ({problem}):\n{steps.operator_diagnosis(e2e)}", file=sys.stderr)
            return 1
        time.sleep(3)
    if watch.returncode != 0:
        return 1  # twlegal watch said why
    status = e2e.cluster.get_json("legalmodelrelease", "-n", steps.NAMESPACE, name)["status"]
    url = steps.service_url(e2e, status["serving"]["service"])
    secret, key = status["serving"]["apiKeySecret"].split("/", 1)
    say(f"serving is closed by default: the operator generated the key in Secret {secret} (read it with:")
    print(f"   kubectl get secret {secret} -o jsonpath='{{.data.{key}}}' | base64 -d )")
    steps.use_api_key(e2e, steps.api_key(e2e, status))
    question = "民法第6條的內容是什麼？"
    spec = steps.load_release(RELEASE)["spec"]
    reply = steps.chat(e2e, url, spec["serving"].get("servedModelName") or spec["model"], question)
    say(f"POST {url}/v1/chat/completions  (served revisions: {', '.join(reply['revisions'])})")
    print(f"   Q: {question}\n   A: {reply['answer']}")
    say(f"explore it: export KUBECONFIG={e2e.cluster.kubeconfig}; kubectl get legalmodelreleases -A")
    say(f"stop it:    {twlegal_dev} cluster down --name {CLUSTER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
