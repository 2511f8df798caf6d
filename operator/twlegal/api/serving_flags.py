"""vLLM flags a release may not pass in `spec.serving.extraArgs`.

Two kinds, refused alike, by the CRD (a CEL rule, so `kubectl apply` and `twlegal validate`
reject them naming the field) and again by the server launcher before it starts vLLM:
- what the launcher sets itself: a release must not re-point the model, the pinned revision, the
  listening address, the key or the middleware that checks it;
- what weakens the server: remote code, local files, CORS, request logging (prompts are
  privileged client questions), and flags that import code from a path.

The `--flag value`, `--flag=value` and dotted `--flag.key value` forms are matched, with `_` for
`-` (vLLM accepts both spellings) and any abbreviation (argparse expands a unique prefix).
"""

from __future__ import annotations

import re

# Set by the launcher (server_image/twlegal_server/launcher.py).
LAUNCHER_FLAGS = (
    "model",
    "served-model-name",
    "revision",
    "tokenizer",
    "tokenizer-revision",
    "code-revision",
    "host",
    "port",
    "uds",
    "max-model-len",
    "tensor-parallel-size",
    "api-key",
    "middleware",
    "shutdown-timeout",
    "root-path",
    "download-dir",
    "load-format",
    "config",
    "hf-token",
)
# Weaken the server or run code the release names.
UNSAFE_FLAGS = (
    "trust-remote-code",
    "allowed-local-media-path",
    "allowed-media-domains",
    "allowed-origins",
    "allowed-methods",
    "allowed-headers",
    "allow-credentials",
    "enable-log-requests",
    "enable-log-outputs",
    "tool-parser-plugin",
    "reasoning-parser-plugin",
    "logits-processors",
    "worker-extension-cls",
)
SHORT_FLAGS = ("tp",)  # vLLM's short alias of --tensor-parallel-size


def _any_prefix(flag: str) -> str:
    """A regex matching every non-empty prefix of `flag` (what argparse would expand), `_` for `-`."""
    parts = ["[-_]" if ch == "-" else re.escape(ch) for ch in flag]
    pattern = ""
    for part in reversed(parts[1:]):
        pattern = f"(?:{part}{pattern})?"
    return parts[0] + pattern


# After the flag: nothing, `=value`, or vLLM's dotted form (`--trust-remote-code.x 1` sets it too).
REFUSED_FLAG_PATTERN = (
    "^(?:--(?:" + "|".join(_any_prefix(f) for f in (*LAUNCHER_FLAGS, *UNSAFE_FLAGS)) + ")"
    "|-(?:" + "|".join(_any_prefix(f) for f in SHORT_FLAGS) + "))(?:[.=].*)?$"
)
_REFUSED = re.compile(REFUSED_FLAG_PATTERN)


def refused_flags(args: list[str]) -> list[str]:
    """The entries of `args` that name a refused flag (as the CRD's rule finds them)."""
    return [arg for arg in args if _REFUSED.match(arg)]
