"""Following a run's Ray tasks, and stopping them without ``ray.cancel``.

Ray 2.56.1 aborts the driver when a task it cancels is completing: the task's reply
reaches a task manager that has dropped the task ("Check failed: ... Tried to complete
task that was not pending"), for generator tasks and plain ones alike. A stopped run (a
failed part, a signal, a lost worker) would then exit 1 with Ray's stack dump in place
of its own error, or take a notebook's kernel along. So a run stops its tasks
cooperatively: the driver writes a stop file beside the parts (:meth:`Target.stop`),
every task looks for it between blocks (:class:`StopCheck`) and ends, and the driver
waits for them (:func:`wind_down`). Only a task that has not ended after ``DRAIN_S``
(stalled on storage, or on a file system that shows the stop file late) is cancelled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import ray
from pyarrow.fs import FileType

from gymray.errors import raise_if_stopped

log = logging.getLogger("gymray")

WAIT_S = 0.5  # how often the driver looks at STOPS while tasks run
DRAIN_S = 5.0  # how long a stopping run waits for its tasks before it cancels them
# How often a task looks for the stop file: on an object store each look is a request.
CHECK_S, CHECK_REMOTE_S = 0.25, 2.0


class Stopped(Exception):  # noqa: N818 - a request, not an error
    """Raised in a task that found the run's stop file; the task ends quietly."""


class StopCheck:
    """Raises :class:`Stopped` (or says, :meth:`asked`) once the driver has written
    ``target``'s stop file. Looks at most every ``CHECK_S`` (``CHECK_REMOTE_S`` on object
    stores); the first call looks."""

    def __init__(self, target: Any):
        self.fs, self.path = target.fs(), target.join(target.stop_file)
        self.every = CHECK_S if target.shares_hashes else CHECK_REMOTE_S
        self.at = -self.every

    def __call__(self) -> None:
        if self.asked():
            raise Stopped

    def asked(self) -> bool:
        """Whether the stop file is there (False without a look, within ``every``)."""
        if time.monotonic() - self.at < self.every:
            return False
        self.at = time.monotonic()
        return self.fs.get_file_info(self.path).type != FileType.NotFound


def given(
    gens: list, stop: Callable[[], None], fetch_local: bool = True
) -> Iterator[tuple[int, Any]]:
    """The items of Ray generator tasks ``gens`` as they come, whichever gives one:
    ``(index, ref)``, then ``(index, None)`` once that generator has given its last.
    Looks at STOPS every ``WAIT_S``. When closed early, it winds down the generators
    still giving items (``stop`` tells them to end: :func:`wind_down`).
    ``fetch_local``: as ``ray.wait``'s (False: items meant for other tasks are not
    copied to this node)."""
    running = dict(zip(gens, range(len(gens)), strict=True))
    try:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_S,
                                fetch_local=fetch_local)  # fmt: skip
            raise_if_stopped()  # (see gymray.errors.STOPS)
            for gen in ready:
                try:
                    ref = next(gen)
                except StopIteration:
                    yield running.pop(gen), None
                    continue
                yield running[gen], ref
    finally:
        wind_down(list(running), stop)


def wind_down(tasks: list, stop: Callable[[], None], drain_s: float = DRAIN_S) -> None:
    """Ends ``tasks`` (object refs of plain tasks, or generators) that may still run:
    ``stop()`` asks them to end, then their ends are waited for (a generator's items
    are dropped), up to ``drain_s``. Whatever still runs then is cancelled, as is
    everything left when the wait itself is interrupted (a second signal). Plain tasks
    already done are left out (a generator's end is known only from its items)."""
    plain = [t for t in tasks if not isinstance(t, ray.ObjectRefGenerator)]
    done = set(ray.wait(plain, num_returns=len(plain), timeout=0, fetch_local=False)[0])
    running = [t for t in tasks if t not in done]
    if not running:
        return
    log.debug("asking %d running task(s) to stop", len(running))
    try:
        stop()
    except Exception as e:  # (no stop file: waiting would only delay the cancel)
        log.warning("could not ask the run's tasks to stop (%s): cancelling them", e)
        drain_s = 0.0
    deadline = time.monotonic() + drain_s
    try:
        while running and (left := deadline - time.monotonic()) > 0:
            ready, _ = ray.wait(running, num_returns=1, timeout=left, fetch_local=False)
            for task in ready:
                if isinstance(task, ray.ObjectRefGenerator) and _gives_more(task):
                    continue
                running.remove(task)
    finally:
        if running and drain_s:
            log.warning(
                "%d task%s still ran %g s after the run asked its tasks to stop: cancelled",
                len(running),
                "s" * (len(running) > 1),
                drain_s,
            )
        for task in running:
            ray.cancel(task)


def get_all(refs: list) -> list:
    """``ray.get(refs)`` of tasks that write (copies, assembly), where a stop or a failed
    task leaves the others running: they are waited for (up to ``DRAIN_S``, then
    cancelled) before the exception goes on, so that none still writes while the caller
    removes what they wrote."""
    try:
        return ray.get(refs)
    except BaseException:
        wind_down(refs, lambda: None)  # (they are short: nothing to ask them)
        raise


def _gives_more(gen: Any) -> bool:
    """Drops ``gen``'s next item; False once it has ended."""
    try:
        next(gen)
    except Exception:  # StopIteration; or the task failed, and has ended too
        return False
    return True
