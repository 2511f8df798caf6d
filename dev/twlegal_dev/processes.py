"""The child processes of the local cluster (control plane, node): each logged to a file and
recorded by pid in a state directory, so `twlegal-dev cluster down` can stop processes that
another process started."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Supervisor:
    state_dir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def pids_file(self) -> Path:
        return self.state_dir / "pids.json"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def spawn(self, name: str, argv: list[str], *, detach: bool, env: dict | None = None) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=detach, env=env
            )
        # Recorded at once, so a start that fails half-way can still be stopped.
        self._record(self.recorded())

    def recorded(self) -> dict[str, int]:
        """Pids by name: those in the state directory, then this process's own children."""
        pids = json.loads(self.pids_file.read_text()) if self.pids_file.exists() else {}
        return {**pids, **{name: proc.pid for name, proc in self.processes.items()}}

    def _record(self, pids: dict[str, int]) -> None:
        if pids:
            self.pids_file.write_text(json.dumps(pids))
        else:
            self.pids_file.unlink(missing_ok=True)

    def alive(self, name: str, pid: int) -> bool:
        if name in self.processes:  # our child: poll() also reaps it
            return self.processes[name].poll() is None
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False

    def running(self) -> dict[str, bool]:
        if not self.pids_file.exists():
            return {}
        return {name: self.alive(name, pid) for name, pid in json.loads(self.pids_file.read_text()).items()}

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.logs / (name + '.log')}")

    def stop(self, names: list[str] | None = None, timeout: float = 15.0) -> None:
        """SIGTERM to `names` (default: all, newest first), SIGKILL to what is left after `timeout`."""
        pids = self.recorded()
        targets = {name: pids[name] for name in (names if names is not None else reversed(list(pids))) if name in pids}
        for pid in targets.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(self.alive(n, p) for n, p in targets.items()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for name, pid in targets.items():
            if self.alive(name, pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if name in self.processes:
                self.processes.pop(name).wait(timeout=5)
        self._record({n: p for n, p in pids.items() if n not in targets})
