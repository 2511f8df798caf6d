"""The pure parts of leader election: when a Lease may be taken, which durations are allowed, the
settings the operator reads from its environment, and the standby's /healthz. The election itself
runs against a real API server in tests/integration/test_leader_election.py."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from twlegal.cli.operator import serve_health
from twlegal.leader import LeaseSettings, may_take, settings_from_env


@pytest.mark.parametrize(
    ("holder", "unchanged_since", "now", "expected"),
    [
        ("", 100.0, 100.0, True),  # released (or never held): at once
        ("me", 100.0, 100.0, True),  # our own: renew
        ("other", 100.0, 114.9, False),  # unchanged for less than its 15s: still theirs
        ("other", 100.0, 115.0, True),  # unchanged for its whole duration: the holder is gone
    ],
)
def test_a_lease_may_be_taken_only_when_free_ours_or_unchanged_for_its_duration(holder, unchanged_since, now, expected):
    assert may_take(holder, "me", unchanged_since, 15, now) is expected


@pytest.mark.parametrize(
    ("lease", "renew", "retry"),
    [(10, 10, 2), (15, 20, 2), (15, 10, 10), (15, 10, 0)],
)
def test_a_leader_must_give_up_before_another_may_take_over(lease, renew, retry):
    with pytest.raises(ValueError, match="retry_seconds < renew_seconds < lease_seconds"):
        LeaseSettings(namespace="ns", identity="me", lease_seconds=lease, renew_seconds=renew, retry_seconds=retry)


def test_settings_from_env_defaults_and_overrides():
    defaults = settings_from_env({"POD_NAMESPACE": "twlegal-system"})
    assert (defaults.name, defaults.namespace) == ("twlegal-operator", "twlegal-system")
    assert (defaults.lease_seconds, defaults.renew_seconds, defaults.retry_seconds) == (15, 10, 2)
    host, _, suffix = defaults.identity.rpartition("_")
    assert host == socket.gethostname() and len(suffix) == 8
    assert settings_from_env({"POD_NAMESPACE": "x"}).identity != defaults.identity, "one identity per process"

    env = {
        "POD_NAMESPACE": "twlegal-system",
        "TWLEGAL_LEASE_SECONDS": "6",
        "TWLEGAL_LEASE_RENEW_SECONDS": "4",
        "TWLEGAL_LEASE_RETRY_SECONDS": "1",
    }
    short = settings_from_env(env, namespace="elsewhere")
    assert (short.namespace, short.lease_seconds, short.renew_seconds, short.retry_seconds) == ("elsewhere", 6, 4, 1)


def test_standby_healthz_answers_and_frees_its_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    close = serve_health(port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert missing.value.code == 404
    finally:
        close()
    close()  # twice is harmless
    with socket.socket() as rebind:  # kopf binds the same port next
        rebind.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rebind.bind(("0.0.0.0", port))
