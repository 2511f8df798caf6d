"""An OpenAI-compatible client with nothing but the standard library, run inside the cluster
(`python3 -c`) by the end-to-end tests:

  once BASE_URL MODEL PROMPT   one chat completion and /v1/models, as one JSON object
  loop BASE_URL MODEL PROMPT   the same, again and again, one JSON line each, until /tmp/stop-client exists

The API key is read from the file TWLEGAL_API_KEY_FILE (default /tmp/api-key) before every
request, when it exists: rewriting the file switches keys mid-loop (a rotation), and the key is
never on a command line.
"""

import json
import os
import sys
import time
import urllib.request

KEY_FILE = os.environ.get("TWLEGAL_API_KEY_FILE", "/tmp/api-key")


def headers():
    out = {"Content-Type": "application/json"}
    if os.path.exists(KEY_FILE):
        with open(KEY_FILE) as f:
            out["Authorization"] = "Bearer " + f.read().strip()
    return out


def call(base_url, model, prompt):
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 24, "temperature": 0}
    ).encode()
    request = urllib.request.Request(f"{base_url}/v1/chat/completions", data=body, headers=headers())
    with urllib.request.urlopen(request, timeout=60) as resp:
        answer = json.load(resp)
    with urllib.request.urlopen(urllib.request.Request(f"{base_url}/v1/models", headers=headers()), timeout=30) as resp:
        models = [m["id"] for m in json.load(resp)["data"]]
    return {
        "ok": True,
        "answer": answer["choices"][0]["message"]["content"],
        "model": answer["model"],
        "models": models,
        "revisions": [m.split(":", 1)[1] for m in models if ":" in m],
    }


def main(mode, base_url, model, prompt):
    if mode == "once":
        print(json.dumps(call(base_url, model, prompt), ensure_ascii=False))
        return
    while not os.path.exists("/tmp/stop-client"):
        started = time.time()
        try:
            record = call(base_url, model, prompt)
        except Exception as exc:  # noqa: BLE001 - every failure is a finding: report it, keep going
            record = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        record["at"] = round(started, 3)
        print(json.dumps(record, ensure_ascii=False), flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    main(*sys.argv[1:5])
