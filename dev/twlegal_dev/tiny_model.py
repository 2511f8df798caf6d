"""The tiny Llama and tokenizer the trainer and server tests (and benchmarks) build themselves
from the fixture text: nothing is downloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from . import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "legal"  # data files, shared with the tests
SPECIAL = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
]


def fixture_texts() -> list[str]:
    texts = []
    for name in ("tw-legal-chat.jsonl", "tw-legal-alpaca.jsonl", "tw-legal-mc.jsonl"):
        for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines():
            texts.append(json.dumps(json.loads(line), ensure_ascii=False))
    return texts


def build_tiny_model(directory: Path) -> Path:
    """A byte-level BPE tokenizer (vocab 512, Llama-3 special tokens) and a 2-layer Llama with
    head_dim 64 (vLLM's CPU attention needs it), saved as safetensors."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(fixture_texts(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def make_volume(root: Path, tiny_model: Path) -> Path:
    """The storage volume of examples/release-tiny-cpu.yaml: base model, datasets, benchmark."""
    shutil.copytree(tiny_model, root / "base" / "tiny-llama")
    (root / "datasets").mkdir(parents=True)
    (root / "benchmarks").mkdir()
    shutil.copy(FIXTURES / "tw-legal-chat.jsonl", root / "datasets")
    shutil.copy(FIXTURES / "tw-legal-alpaca.jsonl", root / "datasets")
    shutil.copy(FIXTURES / "tw-legal-mc.jsonl", root / "benchmarks")
    return root
