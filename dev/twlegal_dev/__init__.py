"""twlegal's developer tools, apart from the product: a local Kubernetes built from upstream
sources (`twlegal-dev cluster`), the tiny model the tests and the demo build, and the end-to-end
scenario's steps that `make demo` and tests/e2e share. Never installed in an image."""

from pathlib import Path

# The checkout this package is installed (editable) from: the chart, examples and hack/ scripts.
ROOT = Path(__file__).resolve().parents[2]
