"""shared_map runs every chunk exactly once, in the pool or in the calling process, and gives the
results in order, whether the pool is quick, slow to start, or not there at all."""

import os
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor

from tl_med.ingest._sharing import shared_map


def _square_and_where(chunk: list[int]) -> list[tuple[int, int]]:
    return [(x * x, os.getpid()) for x in chunk]


class _SlowStart(Executor):
    """Every submit waits (as a pool starting its forkserver does); only the first chunks get there."""

    def __init__(self) -> None:
        self.inner = ThreadPoolExecutor(1)
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs) -> Future:
        time.sleep(0.05)
        self.submitted += 1
        return self.inner.submit(fn, *args, **kwargs)


def test_results_in_order_each_chunk_once_with_a_process_pool():
    chunks = [list(range(i * 10, i * 10 + 10)) for i in range(24)]
    done: list[int] = []
    with ProcessPoolExecutor(2) as pool:
        results = shared_map(pool, _square_and_where, chunks, done.append)
    assert [[v for v, _ in r] for r in results] == [[x * x for x in c] for c in chunks]
    assert sorted(done) == list(range(24))


def test_the_calling_process_takes_what_the_pool_has_not_started():
    calls: list[int] = []
    lock = threading.Lock()

    def work(chunk: list[int]) -> int:
        with lock:
            calls.append(chunk[0])
        time.sleep(0.01)
        return chunk[0] * 2

    pool = _SlowStart()
    chunks = [[i] for i in range(40)]
    assert shared_map(pool, work, chunks) == [2 * i for i in range(40)]
    assert sorted(calls) == list(range(40))  # every chunk exactly once
    assert pool.submitted < 40  # the caller did some of them itself
    pool.inner.shutdown()


def test_empty_and_single_chunk():
    with ThreadPoolExecutor(2) as pool:
        assert shared_map(pool, len, []) == []
        assert shared_map(pool, len, [[1, 2]]) == [2]
