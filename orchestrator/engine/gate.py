"""Serving measured alone: trials on one node (CPU) or device (GPU) take turns with serving.

    python -m orchestrator sweep --space quickstart      # 2 trials at a time; their serve phases run alone

Every metered top-level phase of a trial (load, train, evaluate, ...) holds its node's or device's
gate *shared*; a serve phase holds it *exclusively*: it waits until no other trial holds the gate,
and while it waits no other trial enters a new phase (a trial whose other rank already holds the
gate may, so that a worker group never deadlocks in a collective). The ranks of one trial share its
turn. Waits are bounded (`WAIT_S`): a serve that cannot get its turn runs anyway and its record
says `exclusive: false`. The rules live in `Turns` (plain asyncio, tested without Ray); `Gate` is
the one Ray actor the driver starts per sweep, and `GateClient` what a worker holds.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque

import ray

# Longest wait for a turn: a serve held back longer (by another trial's long phase, or by the hold
# of a worker that died before releasing it) runs anyway, and its record says it was not alone.
WAIT_S = 900.0


class Turns:
    """The turn-taking rules for any number of keys (node ids, GPU UUIDs)."""

    def __init__(self):
        self.cond = asyncio.Condition()
        self.shared: dict[str, Counter] = {}
        self.owner: dict[str, str | None] = {}
        self.count: Counter = Counter()
        self.queue: dict[str, deque] = {}

    def _state(self, key: str):
        return self.shared.setdefault(key, Counter()), self.queue.setdefault(key, deque())

    def _may_share(self, key: str, trial: str) -> bool:
        holders, queue = self._state(key)
        if self.owner.get(key) not in (None, trial):
            return False
        return holders[trial] > 0 or all(q == trial for q in queue)

    def _may_own(self, key: str, trial: str) -> bool:
        holders, queue = self._state(key)
        if self.owner.get(key) == trial:
            return True
        others = sum(n for t, n in holders.items() if t != trial)
        return self.owner.get(key) is None and bool(queue) and queue[0] == trial and others == 0

    async def acquire(self, key: str, trial: str, exclusive: bool, timeout: float = WAIT_S) -> bool:
        """True once granted; False when `timeout` passed first (then nothing is held)."""
        async with self.cond:
            holders, queue = self._state(key)
            ok = self._may_own if exclusive else self._may_share
            if exclusive and self.owner.get(key) != trial and trial not in queue:
                queue.append(trial)
            try:
                await asyncio.wait_for(self.cond.wait_for(lambda: ok(key, trial)), timeout)
            except asyncio.TimeoutError:
                if exclusive and trial in queue and self.owner.get(key) != trial:
                    queue.remove(trial)
                self.cond.notify_all()
                return False
            if exclusive:
                if self.owner.get(key) is None:
                    self.owner[key] = trial
                    queue.remove(trial)
                self.count[key] += 1
            else:
                holders[trial] += 1
            return True

    async def release(self, key: str, trial: str, exclusive: bool) -> None:
        async with self.cond:
            holders, _ = self._state(key)
            if exclusive and self.owner.get(key) == trial:
                self.count[key] -= 1
                if self.count[key] <= 0:
                    self.owner[key], self.count[key] = None, 0
            elif not exclusive and holders[trial] > 0:
                holders[trial] -= 1
            self.cond.notify_all()

    async def forget(self, trial: str) -> None:
        """Drop whatever a finished (or dead) trial still holds or waits for."""
        async with self.cond:
            for key in list(self.shared):
                self.shared[key].pop(trial, None)
                if self.owner.get(key) == trial:
                    self.owner[key], self.count[key] = None, 0
                if trial in self.queue[key]:
                    self.queue[key].remove(trial)
            self.cond.notify_all()


@ray.remote(num_cpus=0, max_concurrency=1000)
class Gate(Turns):
    """The sweep's gate, an async Ray actor named after the sweep."""

    async def ping(self) -> bool:
        return True


NAMESPACE = "fewshot-sweeps"  # Ray Train's workers do not share the driver's anonymous namespace


def name(sweep: str) -> str:
    return f"fewshot-gate-{sweep}"


_HELD: dict = {}  # the driver's handles: a named actor lives as long as a handle to it does


def start(sweep: str) -> str:
    """The driver's gate for this sweep (owned by the driver: it ends with it); returns its name."""
    held = _HELD.get(name(sweep))
    if held is not None:  # a second sweep of this name in one Ray session: replacing the owner's handle would end the actor
        try:
            ray.get(held.ping.remote())
            return name(sweep)
        except ray.exceptions.RayError:  # that session ended (ray.shutdown), and the actor with it
            pass
    gate = Gate.options(name=name(sweep), namespace=NAMESPACE, get_if_exists=True).remote()
    ray.get(gate.ping.remote())
    _HELD[name(sweep)] = gate
    return name(sweep)


class GateClient:
    """What a trial's worker holds: `hold(exclusive)` around each top-level phase (the metering calls it)."""

    def __init__(self, name: str, trial: str, key: str):
        self.actor, self.trial, self.key = ray.get_actor(name, namespace=NAMESPACE), trial, key

    @contextlib.contextmanager
    def hold(self, exclusive: bool):
        granted = ray.get(self.actor.acquire.remote(self.key, self.trial, exclusive))
        try:
            yield granted
        finally:
            if granted:
                ray.get(self.actor.release.remote(self.key, self.trial, exclusive))


def forget(name: str, trial: str) -> None:
    """Called by the driver when a trial ends, whatever way: nothing it held stays held."""
    with contextlib.suppress(Exception):
        ray.get_actor(name, namespace=NAMESPACE).forget.remote(trial)
