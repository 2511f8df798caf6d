"""Pure decisions: (release, observed children) -> status, objects to apply, events."""

from .lifecycle import decide, settled_stages
from .plan import Decision, Event, Observed, Peer, ServingView, version_key
from .serving import previous_release_name
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
    "version_key",
]
