"""The Llama-3 chat format, tokenised so that only assistant tokens carry a loss.

The template string is saved with the tokenizer, so vLLM formats prompts exactly as training did.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE = -100
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


def encode_llama3(tokenizer, messages: list[dict[str, str]], cutoff: int) -> Example:
    """Token ids of the conversation, and labels that are IGNORE except on assistant replies."""
    ids: list[int] = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    labels: list[int] = [IGNORE] * len(ids)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    for message in messages:
        header = tokenizer.encode(
            f"<|start_header_id|>{message['role']}<|end_header_id|>\n\n", add_special_tokens=False
        )
        body = [*tokenizer.encode(message["content"], add_special_tokens=False), eot]
        ids += header + body
        learn = message["role"] == "assistant"
        labels += [IGNORE] * len(header) + (body if learn else [IGNORE] * len(body))
    return Example(ids[:cutoff], labels[:cutoff])


def encode_with_tokenizer_template(tokenizer, messages: list[dict[str, str]], cutoff: int) -> Example:
    """For `template: tokenizer`: assistant spans found by rendering growing prefixes."""
    ids: list[int] = []
    labels: list[int] = []
    for end in range(1, len(messages) + 1):
        prefix = list(tokenizer.apply_chat_template(messages[:end], tokenize=True, return_dict=False))
        new = prefix[len(ids) :]
        learn = messages[end - 1]["role"] == "assistant"
        ids, labels = prefix, labels + (new if learn else [IGNORE] * len(new))
    return Example(ids[:cutoff], labels[:cutoff])


def pack(examples: list[Example], cutoff: int) -> list[Example]:
    """Whole examples, in order, concatenated into sequences of at most `cutoff` tokens
    (an example never crosses a sequence boundary; each was truncated to the cutoff first)."""
    packed: list[Example] = []
    ids: list[int] = []
    labels: list[int] = []
    for example in examples:
        if ids and len(ids) + len(example.input_ids) > cutoff:
            packed.append(Example(ids, labels))
            ids, labels = [], []
        ids, labels = ids + example.input_ids, labels + example.labels
    if ids:
        packed.append(Example(ids, labels))
    return packed
