"""Training-data preparation at the real size: the old path (Python lists, one sample at a time)
against the new one (prepare.py: Arrow, batched fast tokenizer, worker processes, a cache on the
volume), in one run. Prints JSON.

    python benchmarks/prepare_bench.py [--samples 1000000] [--baseline-samples 100000]

Synthetic alpaca samples (zh-TW legal-style words and punctuation, 5-150 words a field, built here) are
tokenised by the tiny test tokenizer (byte-level BPE) with the llama3 template, cutoff 1024,
packing on. Each measurement runs in a fresh process; peak RSS is the largest process's
(ru_maxrss of the children, memory-mapped Arrow pages included). The old path holds everything in
Python lists, about 18 KB a sample, so at a million samples it would need some 18 GB on this
24 GiB machine: it runs at --baseline-samples, and its time at the full size is extrapolated
linearly (said so in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = [
    "民法",
    "刑法",
    "契約",
    "當事人",
    "請求權",
    "損害賠償",
    "侵權行為",
    "債務人",
    "債權人",
    "法院",
    "判決",
    "上訴",
    "證據",
    "依法",
    "規定",
    "應",
    "得",
    "不得",
    "之",
    "於",
    "及",
    "或",
]


def synthetic(path: Path, count: int) -> None:
    rng = random.Random(0)

    def text(lo: int, hi: int) -> str:  # punctuated as legal text is: a comma every few words
        words = [rng.choice(WORDS) + ("，" if rng.random() < 0.2 else "") for _ in range(rng.randint(lo, hi))]
        return "".join(words) + "。"

    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            row = {"instruction": f"說明第{i}條", "input": text(5, 60), "output": text(10, 150)}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def child(mode: str, data: Path, tokenizer_dir: Path, root: Path) -> None:
    """One measurement, in this process: prints {"seconds": ..., "samples": ...}."""
    from tests.cases import load_example
    from twlegal.api.release import LegalModelRelease
    from twlegal.contracts.training import DatasetSource, ModelSource
    from twlegal.render import OperatorSettings
    from twlegal.render.training import training_config

    release = LegalModelRelease.from_object(load_example())  # the tiny release, as the operator renders it
    config = training_config(release, OperatorSettings(storage_mount_path=str(root))).model_copy(
        update={
            "base_model": ModelSource(path=str(tokenizer_dir)),
            "datasets": [DatasetSource(path=str(data), format="alpaca")],
            "cutoff_length": 1024,
            "packing": True,
            "checkpoint_dir": str(root / "ckpt"),
        }
    )
    from twlegal_trainer.train import load_tokenizer

    tokenizer = load_tokenizer(config)
    started = time.perf_counter()
    if mode == "old":
        from twlegal_trainer.data import load_conversations, prepare_samples

        samples = len(prepare_samples(load_conversations(config.datasets), tokenizer, config).samples)
    else:
        from twlegal_trainer.prepare import prepare

        dataset, _ = prepare(config, tokenizer, str(tokenizer_dir), root / "ckpt")
        samples = len(dataset)
    print(json.dumps({"seconds": round(time.perf_counter() - started, 2), "samples": samples}))


def measure(mode: str, data: Path, tokenizer_dir: Path, root: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(data), str(tokenizer_dir), str(root)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "true"},
    )
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # ru_maxrss of children is the largest so far: a smaller later child leaves it unchanged.
    result["peak_rss_mb"] = round(peak / 1024) if peak > before else f"<= {round(before / 1024)}"
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--baseline-samples", type=int, default=100_000)
    parser.add_argument("--child", nargs=4)
    args = parser.parse_args()
    if args.child:
        mode, data, tok, root = args.child
        child(mode, Path(data), Path(tok), Path(root))
        return

    from twlegal_dev.tiny_model import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="twlegal-prepare-bench-"))
    tokenizer_dir = build_tiny_model(work / "tiny")
    small, full = work / "small.jsonl", work / "full.jsonl"
    synthetic(small, args.baseline_samples)
    synthetic(full, args.samples)
    # Smallest first, so each child's peak RSS can be read (ru_maxrss only grows).
    new_small = measure("new", small, tokenizer_dir, work / "new-small")
    new_full = measure("new", full, tokenizer_dir, work / "new-full")
    warm = measure("new", full, tokenizer_dir, work / "new-full")
    old_small = measure("old", small, tokenizer_dir, work / "old-small")
    scale = args.samples / args.baseline_samples
    old_full_seconds = round(old_small["seconds"] * scale, 1)
    print(
        json.dumps(
            {
                "benchmark": "prepare",
                "data": f"synthetic alpaca, {args.samples:,} samples ({full.stat().st_size / 1e6:.0f} MB JSONL); "
                "tiny byte-level BPE tokenizer, llama3 template, cutoff 1024, packing",
                "machine": {"cpus": os.cpu_count()},
                "baseline_old_path": {
                    f"at_{args.baseline_samples}": old_small,
                    f"seconds_at_{args.samples}_extrapolated": old_full_seconds,
                },
                "new_path": {
                    f"cold_at_{args.baseline_samples}": new_small,
                    f"cold_at_{args.samples}": new_full,
                    f"warm_at_{args.samples}": warm,
                },
                "speedup_at_full_size": round(old_full_seconds / new_full["seconds"], 1),
                "samples_per_second": {
                    "old": round(args.baseline_samples / old_small["seconds"]),
                    "new": round(args.samples / new_full["seconds"]),
                },
            },
            indent=2,
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
