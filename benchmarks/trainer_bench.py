"""Trainer throughput on the tiny model on CPU, with and without packing, in one run. Prints JSON.

    python benchmarks/trainer_bench.py

Both runs train the same tiny Llama (built from the fixture text, as the tests do) on the same
216 fixture samples for the same number of epochs in one process; the unpacked run is the baseline.
Reported: tokens/s of non-padding tokens (the trainer's own count), optimizer steps, and the share
of non-padding tokens in the batches each run feeds the model.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TWLEGAL_TERMINATION_LOG", os.devnull)

from tests.cases import load_example  # noqa: E402
from twlegal.api.release import LegalModelRelease  # noqa: E402
from twlegal.render import OperatorSettings  # noqa: E402
from twlegal.render.training import training_config  # noqa: E402
from twlegal_dev.tiny_model import FIXTURES, build_tiny_model  # noqa: E402


def padding_share(config) -> float:
    """Non-padding share of the batches, batching the tokenised samples as the Trainer does."""
    from transformers import AutoTokenizer

    from twlegal_trainer.chat import encode_llama3, pack
    from twlegal_trainer.data import load_conversations

    tokenizer = AutoTokenizer.from_pretrained(config.base_model.path)
    examples = [encode_llama3(tokenizer, m, config.cutoff_length) for m in load_conversations(config.datasets)]
    if config.packing:
        examples = pack(examples, config.cutoff_length)
    import random

    random.Random(0).shuffle(examples)
    bs = config.hyperparameters.per_device_batch_size
    real = padded = 0
    for i in range(0, len(examples), bs):
        batch = [len(e.input_ids) for e in examples[i : i + bs]]
        real += sum(batch)
        padded += max(batch) * len(batch)
    return real / padded


def main() -> None:
    import shutil

    import torch

    from twlegal_trainer.train import run

    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(tempfile.mkdtemp(prefix="twlegal-trainer-bench-"))
    build_tiny_model(work / "volume" / "base" / "tiny-llama")
    (work / "volume" / "datasets").mkdir()
    for name in ("tw-legal-chat.jsonl", "tw-legal-alpaca.jsonl"):
        shutil.copy(FIXTURES / name, work / "volume" / "datasets")
    results = {}
    for packing in (False, True):
        doc = load_example()
        doc["spec"]["training"]["packing"] = packing
        doc["spec"]["training"]["hyperparameters"].update(epochs=3, learningRate=5e-3)
        doc["spec"]["version"] = "v0.1.0" if packing else "v0.0.1"
        config = training_config(
            LegalModelRelease.from_object(doc), OperatorSettings(storage_mount_path=str(work / "volume"))
        )
        started = time.perf_counter()
        assert run(config) == 0
        wall = time.perf_counter() - started
        result = json.loads((Path(config.output_dir) / "twlegal-result.json").read_text())
        results["packing" if packing else "no_packing (baseline)"] = {
            "non_padding_tokens_per_second": result["tokensPerSecond"],
            "optimizer_steps": result["globalStep"],
            "train_runtime_s": result["runtimeSeconds"],
            "wall_s_including_load_and_save": round(wall, 2),
            "final_loss": round(result["finalLoss"], 4),
            "non_padding_share": round(padding_share(config), 3),
        }
    print(
        json.dumps(
            {
                "benchmark": "trainer",
                "model": "tiny Llama (2 layers, hidden 128, vocab 512), fp32, 1 CPU process",
                "data": "216 fixture samples, cutoff 256, per-device batch 8, 3 epochs",
                "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
                **results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
