"""Map a function over chunks of work in a process pool, with the calling process helping.

Starting a pool's first worker can take a while (a forkserver imports the ingest modules first),
and while it waits the calling process would sit idle. :func:`shared_map` submits the chunks
from a helper thread and meanwhile works through them itself, from the other end, until the pool
returns its first result: it takes a chunk no worker has been given yet, or one still waiting in
the pool (cancelled there), so every chunk runs exactly once, in the pool or here.

Example:
    >>> # results = shared_map(pool, read_many, chunks)  # one result per chunk, in order
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor, Future, as_completed
from typing import Callable, Sequence, TypeVar

__all__ = ["shared_map"]

T = TypeVar("T")
R = TypeVar("R")


def shared_map(pool: Executor, fn: Callable[[T], R], chunks: Sequence[T],
               on_done: Callable[[int], None] | None = None) -> list[R]:
    """``[fn(c) for c in chunks]``, computed in ``pool`` and in this process; ``on_done(i)`` is
    called (in this thread) as each chunk's result arrives. ``fn`` must not raise."""
    n = len(chunks)
    lock = threading.Lock()
    taken = [False] * n  # claimed, by the submitter (for the pool) or by this thread
    futures: list[Future | None] = [None] * n
    failure: list[BaseException] = []

    def submit_all() -> None:
        try:
            for i in range(n):
                with lock:
                    if taken[i]:
                        continue
                    taken[i] = True
                future = pool.submit(fn, chunks[i])
                with lock:
                    futures[i] = future
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            failure.append(exc)

    submitter = threading.Thread(target=submit_all, name="shared-map-submit", daemon=True)
    submitter.start()
    results: list[R | None] = [None] * n
    done = [False] * n
    try:
        for i in reversed(range(n)):
            with lock:
                if any(f is not None and f.done() for f in futures):
                    break  # the pool is up and running: leave the rest to it (this thread would only
                    # compete with the workers for the cores, and with the pool's own thread for the GIL)
                future = futures[i]
                mine = not taken[i] or (future is not None and future.cancel())
                taken[i] = True
            if mine:
                results[i], done[i] = fn(chunks[i]), True
                if on_done:
                    on_done(i)
    finally:
        submitter.join()
    if failure:
        raise failure[0]
    pending = {futures[i]: i for i in range(n) if not done[i]}
    for future in as_completed(pending):  # type: ignore[arg-type]
        i = pending[future]
        results[i] = future.result()
        if on_done:
            on_done(i)
    return results  # type: ignore[return-value]
