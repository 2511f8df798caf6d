"""Pure decisions: (release, observed children) -> status, objects to apply, events."""

from .lifecycle import decide, previous_release_name, settled_stages
from .plan import Decision, Event, Observed, Peer, ServingView
from .storage import StoragePeer

__all__ = [
    "Decision",
    "Event",
    "Observed",
    "Peer",
    "ServingView",
    "StoragePeer",
    "decide",
    "previous_release_name",
    "settled_stages",
]
