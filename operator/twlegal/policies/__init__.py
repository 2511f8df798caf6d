"""Pure decisions: (release, observed children) -> status, objects to apply, events."""

from .lifecycle import Decision, Event, Observed, Peer, ServingView, decide, previous_release_name, settled_stages

__all__ = ["Decision", "Event", "Observed", "Peer", "ServingView", "decide", "previous_release_name", "settled_stages"]
