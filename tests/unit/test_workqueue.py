"""The work queue the operator's event handlers feed (issue 15, items 4 and 7): a release named by
many events while it waits is reconciled once, never by two workers at once, and a failed reconcile
comes back after a doubling backoff until it succeeds."""

from __future__ import annotations

import threading

from twlegal.workqueue import WorkQueue

A, B, C = ("ns", "a"), ("ns", "b"), ("ns", "c")


def clocked(**kwargs):
    now = [0.0]
    return WorkQueue(clock=lambda: now[0], **kwargs), now


def test_a_release_named_by_many_events_while_it_waits_is_reconciled_once():
    work, _ = clocked()
    for key in (A, B, A, A, C, B):
        work.add(key)
    assert len(work) == 3
    assert [work.get(timeout=0), work.get(timeout=0), work.get(timeout=0)] == [A, B, C], "in the order they came"
    assert work.get(timeout=0) is None


def test_a_release_is_never_reconciled_by_two_workers_and_an_add_meanwhile_runs_after():
    work, _ = clocked()
    work.add(A)
    assert work.get(timeout=0) == A
    work.add(A)  # an event while A is being reconciled: its reconcile may have read the world before it
    work.add(B)
    assert work.get(timeout=0) == B, "A is active: no second worker gets it"
    assert work.get(timeout=0) is None
    work.done(B, ok=True)
    work.done(A, ok=True)
    assert work.get(timeout=0) == A, "the add during the reconcile runs once it is done"
    work.done(A, ok=True)
    assert work.get(timeout=0) is None


def test_a_failed_reconcile_comes_back_with_a_doubling_backoff_until_it_succeeds():
    work, now = clocked(base_seconds=1, max_seconds=60)
    work.add(A)
    delays = []
    for _ in range(8):
        assert work.get(timeout=0) == A
        delays.append(work.done(A, ok=False))
        assert work.get(timeout=0) is None, "not before its backoff"
        now[0] += delays[-1]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert work.failing() == 1
    assert work.get(timeout=0) == A
    assert work.done(A, ok=True) is None
    assert work.failing() == 0
    work.add(A)
    assert work.get(timeout=0) == A and work.done(A, ok=False) == 1, "success reset the backoff"


def test_an_event_brings_a_release_in_backoff_forward_and_a_later_add_never_delays_it():
    work, now = clocked()
    work.add(A, delay=30)
    work.add(A, delay=50)
    now[0] = 30
    assert work.get(timeout=0) == A
    work.done(A, ok=True)
    work.add(B, delay=30)
    work.add(B)
    assert work.get(timeout=0) == B


def test_a_deleted_release_is_forgotten():
    work, _ = clocked()
    work.add(A)
    work.forget(A)
    assert len(work) == 0 and work.get(timeout=0) is None


def test_workers_block_until_work_comes_and_stop_when_it_closes():
    work = WorkQueue()
    got = []
    worker = threading.Thread(target=lambda: got.append(work.get()))
    worker.start()
    work.add(A)
    worker.join(5)
    assert got == [A]
    waiting = threading.Thread(target=lambda: got.append(work.get()))
    waiting.start()
    work.close()
    waiting.join(5)
    assert not waiting.is_alive() and got == [A, None]


def test_a_release_not_started_yet_comes_before_the_news_of_running_ones():
    work, now = clocked()
    work.add(A)  # a Job's news
    work.add(B)
    work.add(C, first=True)  # a new release: no status, no Job
    work.add(A, first=True)  # already queued: it moves up
    assert [work.get(timeout=0), work.get(timeout=0), work.get(timeout=0)] == [C, A, B]
    for key in (A, B, C):
        work.done(key, ok=True)
    work.add(A, delay=5, first=True)
    work.add(B)
    assert work.get(timeout=0) == B, "a first key that is not due yet waits its turn"
    now[0] = 5
    assert work.get(timeout=0) == A
