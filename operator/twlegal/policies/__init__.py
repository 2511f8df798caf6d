"""Pure decisions: (release, observed children) -> status, objects to apply, events."""

from .lifecycle import Decision, Event, Observed, Peer, ServingView, decide, previous_release_name

__all__ = ["Decision", "Event", "Observed", "Peer", "ServingView", "decide", "previous_release_name"]
