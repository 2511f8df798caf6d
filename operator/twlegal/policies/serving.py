"""Who serves a target, and how its Deployment changes (pure: no client, no kopf).

The newest passed release of a target serves it: newest by version, then creation time, then name,
so every release computes the same order and exactly one of two with the same version serves.
Releases that are terminal or being deleted never count; deleting the serving release hands the
target to the newest release that remains (its owner references keep the Deployment meanwhile).

Two kinds of rollout, told apart by the phase the release had:
- a new release takes the target (RollingOut). Pods that never become ready end it RolledBack and
  the release that served before pins the target again. Only a new release is ever rolled back.
- a serving release's own Deployment changes (an edit of replicas, resources or extraArgs, an
  operator upgrade with a new default image, a rotated key). It stays Serving. If the new pods miss
  the deadline the Deployment returns to the spec that last completed a rollout (kept on the
  Deployment), the update is remembered as rejected until the spec renders differently, and a
  Warning says so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from ..api import reasons as R
from ..api.release import LegalModelRelease
from ..api.status import TERMINAL_PHASES, Phase
from ..render import names, pod
from ..render import serving as render_serving
from ..render.settings import OperatorSettings
from . import children
from . import conditions as cond
from .conditions import DEPLOYED, READY
from .plan import Decision, Event, Peer, Plan, ServingView

PREVIOUS_RELEASE_ANNOTATION = f"{names.ANNOTATION_PREFIX}/previous-release"
# The hash of the Deployment spec the operator last applied, and the spec that last completed a
# rollout ({"release", "hash", "spec"} as JSON): what an update that fails returns to.
SPEC_HASH_ANNOTATION = f"{names.ANNOTATION_PREFIX}/spec-hash"
LAST_GOOD_ANNOTATION = f"{names.ANNOTATION_PREFIX}/last-good-spec"


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def last_good(deployment: dict[str, Any] | None) -> dict[str, Any] | None:
    text = children.annotation(deployment, LAST_GOOD_ANNOTATION)
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) and {"hash", "spec"} <= value.keys() else None


def candidates(view: ServingView, me: str) -> list[Peer]:
    """The target's other releases that could serve it: passed (or pinned now, whose status may lag),
    neither terminal nor being deleted."""
    pinned = children.template_label(view.deployment, names.RELEASE_LABEL)
    return [
        p
        for p in view.peers
        if p.name != me and not p.deleting and p.phase not in TERMINAL_PHASES and (p.passed or p.name == pinned)
    ]


def serving(plan: Plan, view: ServingView, settings: OperatorSettings) -> Decision:
    release = plan.planned_release()
    target = names.serving_target(release)
    me = replace(Peer.of(release), phase=plan.status.get("phase"), passed=True)
    others = candidates(view, release.name)
    newest = max([me, *others], key=Peer.order)
    key = render_serving.api_key_ref(release, settings)
    plan.section(
        "serving",
        target=target,
        deployment=target,
        service=target,
        endpoint=render_serving.endpoint(release),
        apiKeySecret=str(key) if key else None,
    )
    if newest.name == release.name and key is not None and key.generated and view.key_version is None:
        # Serving is closed by default: no key named anywhere, so the target gets one of its own.
        plan.decision.generate_key = key
        return plan.decision
    if newest.name != release.name:
        return _superseded(plan, newest, target)

    previous = _previous(release, view)
    # Who takes over if this release is deleted: it owns the target's objects too, so garbage
    # collection keeps them until the last release that could serve is gone.
    runner_up = max(others, key=Peer.order, default=None)
    objects = _Objects(settings, view, runner_up)
    pinned = children.template_label(view.deployment, names.RELEASE_LABEL)
    if pinned == release.name and plan.old.get("phase") == Phase.SERVING:
        return _update(plan, view, objects.render(release, previous))
    if pinned == release.name:
        rollout = children.rollout_state(view.deployment or {})
        if rollout.state == "failed" and plan.old.get("phase") == Phase.ROLLING_OUT:
            return _roll_back(plan, previous, rollout.message, objects)
        plan.section("serving", readyReplicas=rollout.ready_replicas)
        desired = objects.render(release, previous)
        if rollout.state != "complete":
            plan.decision.apply += desired
            plan.condition(DEPLOYED, "Unknown", R.ROLLING_OUT, rollout.message)
            plan.condition(READY, "False", R.ROLLING_OUT, rollout.message)
            return plan.phase(Phase.ROLLING_OUT, R.ROLLOUT_STARTED, f"rolling {target} to {release.spec.version}")
        return _serving_now(plan, _remember_good(desired, release.name))

    # Pin the target to this release; remember who served before, for rollback.
    plan.decision.apply += objects.render(release, previous)
    if previous is not None:
        plan.section("serving", previousRevision=previous.spec.version)
    plan.condition(DEPLOYED, "Unknown", R.ROLLING_OUT, f"rolling {target} to {release.spec.version}")
    plan.condition(READY, "False", R.ROLLING_OUT, "new serving pods are not ready yet")
    return plan.phase(Phase.ROLLING_OUT, R.ROLLOUT_STARTED, f"rolling {target} to {release.spec.version}")


def _superseded(plan: Plan, newest: Peer, target: str) -> Decision:
    if plan.old.get("phase") == Phase.SERVING and newest.phase != Phase.SERVING:
        return plan.decision  # its pods serve until the newer release's are ready
    serving = plan.status.get("serving") or {}
    plan.section(
        "serving",
        supersededBy=newest.name,
        servedUntil=serving.get("servedUntil") or (plan.now if serving.get("servingSince") else None),
    )
    plan.condition(DEPLOYED, "False", R.SUPERSEDED, f"{newest.name} ({newest.version}) serves {target}")
    plan.condition(READY, "False", R.SUPERSEDED, f"{newest.name} ({newest.version}) serves {target}")
    return plan.phase(Phase.SUPERSEDED, R.SUPERSEDED, f"{newest.name} ({newest.version}) now serves {target}")


def _previous(release: LegalModelRelease, view: ServingView) -> LegalModelRelease | None:
    name = previous_release_name(release.name, view.deployment)
    previous = view.previous if view.previous and view.previous.name == name else None
    if previous is None or previous.metadata.deletion_timestamp or not previous.metadata.uid:
        return None  # a release being deleted is nobody to roll back to
    return previous


def previous_release_name(release_name: str, deployment: dict[str, Any] | None) -> str | None:
    """Who served the target before `release_name` took it: the release pinned now, or, once
    this release is pinned, the one the Deployment remembers."""
    pinned = children.template_label(deployment, names.RELEASE_LABEL)
    if pinned and pinned != release_name:
        return pinned
    return children.annotation(deployment, PREVIOUS_RELEASE_ANNOTATION) or None


class _Objects:
    """Deployment, Service and NetworkPolicy pinned to a release, owned by it, the release before it
    and the runner-up (garbage collection waits for every owner), carrying the last good spec."""

    def __init__(self, settings: OperatorSettings, view: ServingView, runner_up: Peer | None):
        self.settings = settings
        self.view = view
        self.runner_up = runner_up
        self.last_good = last_good(view.deployment)

    def render(
        self, release: LegalModelRelease, previous: LegalModelRelease | None, *, same_key: bool = True
    ) -> list[dict[str, Any]]:
        objects = render_serving.render(release, self.settings, self.view.key_version if same_key else None)
        extra = {}
        if previous is not None and previous.metadata.uid:
            extra[previous.metadata.uid] = pod.release_reference(previous.name, previous.metadata.uid)
        if self.runner_up is not None and self.runner_up.uid and self.runner_up.name != release.name:
            extra.setdefault(self.runner_up.uid, pod.release_reference(self.runner_up.name, self.runner_up.uid))
        for obj in objects:
            meta = obj["metadata"]
            own = {ref["uid"] for ref in meta.get("ownerReferences", [])}
            meta["ownerReferences"] = [*meta.get("ownerReferences", []), *(r for u, r in extra.items() if u not in own)]
            if obj["kind"] == "Deployment":
                annotations = meta.setdefault("annotations", {})
                annotations[PREVIOUS_RELEASE_ANNOTATION] = previous.name if previous else ""
                annotations[SPEC_HASH_ANNOTATION] = spec_hash(obj["spec"])
                if self.last_good is not None:
                    annotations[LAST_GOOD_ANNOTATION] = json.dumps(self.last_good, sort_keys=True)
        return objects


def _deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(obj for obj in objects if obj["kind"] == "Deployment")


def _remember_good(objects: list[dict[str, Any]], release: str) -> list[dict[str, Any]]:
    """The objects, their Deployment's spec recorded as the one to return to if an update fails."""
    deployment = _deployment(objects)
    good = {"release": release, "hash": spec_hash(deployment["spec"]), "spec": deployment["spec"]}
    deployment["metadata"]["annotations"][LAST_GOOD_ANNOTATION] = json.dumps(good, sort_keys=True)
    return objects


def _with_spec(objects: list[dict[str, Any]], good: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects, their Deployment back at the last good spec."""
    deployment = _deployment(objects)
    deployment["spec"] = good["spec"]
    deployment["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = good["hash"]
    return objects


def _serving_now(plan: Plan, objects: list[dict[str, Any]]) -> Decision:
    release = plan.release
    target = names.serving_target(release)
    plan.decision.apply += objects
    plan.section(
        "serving",
        revision=release.spec.version,
        servingSince=(plan.status.get("serving") or {}).get("servingSince") or plan.now,
    )
    for key in ("supersededBy", "servedUntil", "rejectedUpdate"):  # serving again, or updated at last
        plan.status["serving"].pop(key, None)
    plan.condition(DEPLOYED, "True", R.ROLLOUT_COMPLETE, f"{target} serves {release.spec.version}")
    plan.condition(READY, "True", R.SERVING, f"{target} serves {release.spec.version}")
    return plan.phase(Phase.SERVING, R.SERVING, f"{target} serves {release.spec.version}")


def _update(plan: Plan, view: ServingView, desired: list[dict[str, Any]]) -> Decision:
    """A serving release whose Deployment may be changing: it serves throughout (the old pods stay
    until new ones are ready); a failed update goes back to the last good spec."""
    deployment = view.deployment or {}
    target = names.serving_target(plan.release)
    want = spec_hash(_deployment(desired)["spec"])
    applied = children.annotation(deployment, SPEC_HASH_ANNOTATION)
    good = last_good(deployment)
    rollout = children.rollout_state(deployment)
    plan.section("serving", readyReplicas=rollout.ready_replicas)
    plan.condition(READY, "True", R.SERVING, f"{target} serves {plan.release.spec.version}")
    rejected = (plan.status.get("serving") or {}).get("rejectedUpdate")
    if good is not None and want == rejected and good["hash"] != want:
        plan.decision.apply += _with_spec(desired, good)  # until the spec renders differently
        plan.status["phase"] = Phase.SERVING.value
        return plan.decision
    if applied == want and rollout.state == "complete":
        return _serving_now(plan, _remember_good(desired, plan.release.name))
    if rollout.state == "complete":
        # A new spec to apply; whether it rolls the pods shows once the Deployment controller saw it.
        plan.decision.apply += desired
        plan.status["phase"] = Phase.SERVING.value
        return plan.decision
    if applied == want and rollout.state == "failed":
        if good is not None and good["hash"] != want:
            message = (
                f"the update of {target} was rolled back: its new pods never became ready ({rollout.message}); "
                f"{target} serves the spec of its last complete rollout until the release's spec changes"
            )
            plan.decision.apply += _with_spec(desired, good)
            plan.section("serving", rejectedUpdate=want)
            plan.condition(DEPLOYED, "True", R.UPDATE_ROLLED_BACK, message)
            plan.decision.events.append(Event("Warning", R.UPDATE_ROLLED_BACK, message))
            plan.status["phase"] = Phase.SERVING.value
            return plan.decision
        message = f"the update of {target} is not progressing ({rollout.message}) and no earlier spec is recorded"
        _set_deployed(plan, "False", R.UPDATE_FAILED, message, Event("Warning", R.UPDATE_FAILED, message))
    else:
        message = f"updating {target}: {rollout.message or 'new pods are starting'}"
        _set_deployed(plan, "Unknown", R.UPDATING, message, Event("Normal", R.UPDATE_STARTED, message))
    plan.decision.apply += desired
    plan.status["phase"] = Phase.SERVING.value
    return plan.decision


def _set_deployed(plan: Plan, status: str, reason: str, message: str, event: Event) -> None:
    """The Deployed condition, with an event when its reason changes."""
    old = cond.get(plan.old.get("conditions") or [], DEPLOYED)
    if old is None or old.get("reason") != reason:
        plan.decision.events.append(event)
    plan.condition(DEPLOYED, status, reason, message)


def _roll_back(plan: Plan, previous: LegalModelRelease | None, why: str, objects: _Objects) -> Decision:
    release = plan.release
    target = names.serving_target(release)
    if previous is not None:
        # The previous release pins the target again, remembering nobody before it.
        # The key version holds only if the previous release reads the same Secret.
        settings = objects.settings
        same_key = render_serving.api_key_ref(previous, settings) == render_serving.api_key_ref(release, settings)
        plan.decision.apply += objects.render(previous, None, same_key=same_key)
        restored = f"; {target} serves {previous.spec.version} again"
    else:
        restored = "; there is no previous revision to restore"
    message = f"new pods never became ready ({why}){restored}"
    plan.section("serving", readyReplicas=0)
    plan.condition(DEPLOYED, "False", R.PROGRESS_DEADLINE_EXCEEDED, message)
    plan.condition(READY, "False", R.ROLLED_BACK, message)
    return plan.phase(Phase.ROLLED_BACK, R.ROLLED_BACK, message)
