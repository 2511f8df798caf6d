"""The gate's scores equal lm-evaluation-harness's on the same model and data (issue 17): lm-eval
0.4 runs our benchmark as a custom multiple-choice task with `apply_chat_template`, through its own
HF backend, and its per-choice log-likelihoods and accuracies are compared with ours."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.component.test_trainer import subject_benchmark
from tests.support.cluster import in_ci
from twlegal.contracts.evaluation import EvaluationConfig
from twlegal.contracts.training import ModelSource, ReleaseIdentity
from twlegal_trainer.benchmark import load
from twlegal_trainer.chat import LLAMA3_TEMPLATE
from twlegal_trainer.evaluate import chat_context, continuations, encode_pair, load_model, loglikelihoods, prompt
from twlegal_trainer.evaluate import score as our_score

try:
    import lm_eval
except ImportError as exc:
    if in_ci():
        raise
    pytest.skip(f"lm-eval is not installed: {exc}", allow_module_level=True)

TASK = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question.strip()}}}}{{% for c in choices %}}\\n{{{{ 'ABCDEFGH'[loop.index0] }}}}. {{{{ c }}}}{{% endfor %}}\\nAnswer:"
doc_to_choice: {choices}
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""


@pytest.fixture(scope="module")
def chat_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny base with the chat template training saves, as lm-eval needs one to apply."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("chat-model") / "tiny"
    shutil.copytree(tiny_model, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = LLAMA3_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


def lm_eval_run(model: Path, data: Path, tasks: Path, name: str, choices: str) -> dict:
    from lm_eval.tasks import TaskManager

    tasks.mkdir(exist_ok=True)
    (tasks / f"{name}.yaml").write_text(TASK.format(name=name, data=data, choices=choices), encoding="utf-8")
    return lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model), "dtype": "float32"},
        tasks=[name],
        task_manager=TaskManager(include_path=str(tasks)),
        apply_chat_template=True,
        batch_size=8,
        device="cpu",
        log_samples=True,
    )


@pytest.mark.parametrize(
    ("protocol", "choices", "metric"),
    [
        ("letter", "\"{{ ['A','B','C','D','E','F','G','H'][:choices|length] }}\"", "acc,none"),
        ("choiceText", "choices", "acc,none"),
    ],
)
def test_our_score_equals_lm_evals(chat_model, tmp_path, monkeypatch, protocol, choices, metric):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = subject_benchmark(tmp_path / "bench.jsonl")
    name = f"twlegal_{protocol.lower()}"
    theirs = lm_eval_run(chat_model, data, tmp_path / "tasks", name, choices)

    config = EvaluationConfig(
        release=ReleaseIdentity(namespace="default", name="tiny", model="twlegal/tiny-legal", version="v0.1.0"),
        model_path=str(chat_model),
        benchmark=ModelSource(path=str(data)),
        result_path=str(tmp_path / "result.json"),
        protocol=protocol,
    )
    questions, _ = load(config)
    ours = our_score(str(chat_model), questions, protocol, batch_size=8, use_cpu=True)
    assert ours.total == len(theirs["samples"][name]) == 88
    print(f"{protocol}: ours {ours.score} lm-eval {100 * theirs['results'][name][metric]:.2f}")
    assert abs(ours.score - 100 * theirs["results"][name][metric]) < 0.5, (ours.score, theirs["results"][name])

    # Not only the totals: every choice's log-likelihood matches lm-eval's request for it.
    tokenizer, model = load_model(str(chat_model), use_cpu=True)
    for sample in theirs["samples"][name][:12]:
        q = questions[sample["doc_id"]]
        context = chat_context(tokenizer, prompt(q))
        ours_ll = loglikelihoods(model, [encode_pair(tokenizer, context, c) for c in continuations(q, protocol)])
        theirs_ll = [float(resp[0][0]) for resp in sample["resps"]]  # [[(loglikelihood, is_greedy)], ...]
        assert ours_ll == pytest.approx(theirs_ll, abs=1e-3), (sample["doc_id"], ours_ll, theirs_ll)
