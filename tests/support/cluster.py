"""The real control plane the integration tier runs against, and helpers to drive it."""

from __future__ import annotations

import os

from twlegal_dev import ROOT
from twlegal_dev.client import KUBECTL, Cluster, api_client, wait_for

__all__ = ["KUBECTL", "ROOT", "Cluster", "api_client", "in_ci", "wait_for"]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
