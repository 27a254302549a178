"""Training batches made ahead in a thread: same batches as made in line, generator states to resume
from, errors reach the training loop, closing never hangs."""

import threading
import time

import pytest
import torch

from core.inspect.feeder import BatchFeeder


def _maker(g):
    def make():
        return torch.rand(2, 3, generator=g), [torch.randint(0, 9, (4,), generator=g)]
    return make


def test_batches_and_states_are_those_of_making_them_in_line():
    in_line = _maker(torch.Generator().manual_seed(5))
    expected = []
    for _ in range(6):
        expected.append(in_line())
    g = torch.Generator().manual_seed(5)
    with BatchFeeder(_maker(g), [g], "cpu") as feed:
        got = [feed.next() for _ in range(6)]
    for (a, (b,)), ((c, (d,)), _) in zip(expected, got):
        assert torch.equal(a, c) and torch.equal(b, d)
    # Resuming from the states that came with batch 3 makes batch 4 again.
    resumed = torch.Generator()
    resumed.set_state(got[2][1][0])
    again = _maker(resumed)()
    assert torch.equal(again[0], expected[3][0]) and torch.equal(again[1][0], expected[3][1][0])


def test_an_error_while_making_a_batch_reaches_the_caller():
    calls = []

    def make():
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("unreadable patch")
        return (torch.zeros(1),)

    with BatchFeeder(make, [], "cpu") as feed:
        feed.next()
        with pytest.raises(ValueError, match="unreadable patch"):
            feed.next()


def test_closing_a_feeder_whose_queue_is_full_returns_at_once():
    feed = BatchFeeder(lambda: (torch.zeros(1),), [], "cpu", depth=1)
    time.sleep(0.2)  # the thread now waits on the full queue
    t = time.monotonic()
    feed.close()
    assert time.monotonic() - t < 2 and not feed._thread.is_alive()


def test_on_the_cpu_batches_are_made_with_one_thread_and_other_threads_keep_theirs():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen, gate = [], threading.Event()

        def make():
            gate.wait()  # the first batch only once the constructor has put the process-wide count back
            seen.append(torch.get_num_threads())
            return (torch.zeros(1),)

        with BatchFeeder(make, [], "cpu", depth=1) as feed:
            gate.set()
            for _ in range(3):
                feed.next()
            here = torch.get_num_threads()
            later = []
            t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
            t.start()
            t.join()
        assert set(seen) == {1}  # so the training step's parallel regions keep both cores
        assert here == 2 and later == [2]  # neither the caller nor threads started afterwards lose cores
    finally:
        torch.set_num_threads(before)
