"""The trainer's divergence guard on loss sequences: noise late in a run is not a collapse."""

from __future__ import annotations

import math
from types import SimpleNamespace

from twlegal_trainer.callbacks import DivergenceGuard


def run(losses: list[float], ratio: float = 4.0) -> tuple[DivergenceGuard, int | None]:
    guard = DivergenceGuard(ratio)
    for step, loss in enumerate(losses, start=1):
        control = SimpleNamespace(should_training_stop=False, should_save=True)
        guard.on_log(None, SimpleNamespace(global_step=step), control, logs={"loss": loss})
        if control.should_training_stop:
            assert control.should_save is False, "a diverged run must not checkpoint its broken state"
            return guard, step
    return guard, None


def test_one_hard_batch_near_a_tiny_minimum_is_not_a_collapse():
    # Seen on a real node: 0.34 at step 144 after a minimum of 0.083 (20 epochs of a tiny dataset).
    losses = [3.0, 2.0, 1.2, 0.6, 0.3, 0.15] + [0.09, 0.08, 0.1, 0.085, 0.34, 0.09, 0.083, 0.1] * 5
    guard, stopped = run(losses)
    assert stopped is None, guard.reason


def test_a_collapse_that_stays_up_is_caught_within_the_window():
    # The seed card's v1.1.0 "model collapsed": the loss climbs from ~0.9 and stays above 10.
    losses = [2.5, 1.8, 1.3, 1.0, 0.93, 0.95, 0.92, 0.94, 0.93] + [11.2] * 10
    guard, stopped = run(losses)
    assert stopped is not None and stopped <= 9 + 5
    assert "above 4 x its minimum" in guard.reason


def test_a_run_that_blows_up_from_its_first_steps_is_caught_at_the_first_full_window():
    # lr 1.0 on the tiny model (the component tier's absurd run): no window average is ever low.
    losses = [6.252, 38.17, 53.96, 98.51, 95.02, 180.6, 90.41, 87.12, 78.92, 61.97, 63.06, 49.76]
    guard, stopped = run(losses)
    assert stopped == 5, guard.reason


def test_a_non_finite_loss_stops_at_once():
    guard, stopped = run([2.0, 1.5, math.nan])
    assert stopped == 3 and "nan" in guard.reason
