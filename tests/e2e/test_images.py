"""What the images carry: the product and its dependencies, never the dev tools or the tests."""

from __future__ import annotations

import subprocess

import pytest

from twlegal_dev import scenario as steps

# Run inside each image: the files of every installed distribution, and whether dev code imports.
LIST_FILES = """
import importlib.metadata as md, importlib.util, json
files = [str(f) for d in md.distributions() for f in (d.files or [])]
print(json.dumps({"dists": sorted(d.metadata["Name"] for d in md.distributions()),
                  "twlegal": [str(f) for f in (md.files("twlegal") or [])],
                  "dev_importable": importlib.util.find_spec("twlegal_dev") is not None,
                  "tests_importable": importlib.util.find_spec("tests") is not None,
                  "suspicious": [f for f in files if "twlegal_dev" in f or "devcluster" in f
                                 or f.endswith(("fake_kubelet.py", "build-binaries.sh"))]}))
"""


@pytest.mark.e2e
@pytest.mark.parametrize("image", ["operator", "trainer", "server"])
def test_image_carries_no_dev_code(images, image):
    import json

    proc = subprocess.run(
        [steps.DOCKER, "run", "--rm", "--entrypoint", "python3", images[image], "-c", LIST_FILES],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "twlegal" in found["dists"] and "twlegal-dev" not in found["dists"], found["dists"]
    assert any(f.startswith("twlegal/api/") for f in found["twlegal"]), found["twlegal"][:20]
    assert not found["dev_importable"] and not found["tests_importable"], found
    assert found["suspicious"] == [], found["suspicious"]
