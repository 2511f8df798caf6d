"""YAML in and out, read the way kubectl reads it.

PyYAML implements YAML 1.1, where `5e-5` (no dot) is a string; kubectl and the API server read it
as the number users mean. The loader below adds YAML 1.2's float syntax so `twlegal validate` and
the cluster agree on what a file says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

_FLOAT_12 = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_FLOAT_TAG = "tag:yaml.org,2002:float"


def _yaml12_floats() -> dict[str, list[Any]]:
    """SafeLoader's resolvers (copied, never mutated) with YAML 1.2's float syntax."""
    table = {
        first: [r for r in resolvers if r[0] != _FLOAT_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    for first in "-+.0123456789":
        # After int, so that "100" stays an int.
        table.setdefault(first, []).append((_FLOAT_TAG, _FLOAT_12))
    return table


class _Loader(yaml.SafeLoader):
    yaml_implicit_resolvers = _yaml12_floats()


class _Dumper(yaml.SafeDumper):
    # Quote every string the loader would read as a number (e.g. "5e-5").
    yaml_implicit_resolvers = _yaml12_floats()

    def ignore_aliases(self, data: Any) -> bool:  # never emit &id001 anchors
        return True


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def load_all(text: str) -> list[Any]:
    """Every non-empty document of a YAML stream."""
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]


def load_files(paths: Iterable[str | Path]) -> Iterator[tuple[str, int, Any]]:
    """(file, document index, document) for each document of each file."""
    for path in paths:
        for index, doc in enumerate(load_all(Path(path).read_text(encoding="utf-8"))):
            yield str(path), index, doc


def dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)


def dump_all(objs: Iterable[Any]) -> str:
    return yaml.dump_all(
        list(objs), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110, explicit_start=True
    )
