"""``in_lanes``: which writer appends which batch of which folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from mailferry.engine.migrate import in_lanes


class Source:
    """The folders, handed out one by one as the engine plans them; remembers how many it gave."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes
        self.taken = 0

    def __iter__(self) -> Iterator[int]:
        for folder in range(len(self.sizes)):
            self.taken = folder + 1
            yield folder
        self.taken = len(self.sizes) + 1  # asked once more: none left


def batches_of(sizes: list[int]) -> Callable[[int], Iterator[tuple[int, int]]]:
    return lambda folder: iter([(folder, k) for k in range(sizes[folder])])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 6), max_size=12), st.integers(1, 4), st.integers(1, 4))
def test_each_batch_once_in_order_and_a_folder_on_one_writer_while_others_wait(
    sizes: list[int], writers: int, run: int
) -> None:
    source = Source(sizes)
    out = []
    for lane, folder, batch in in_lanes(source, writers, batches_of(sizes), run):
        out.append((lane, folder, batch, source.taken))
    # Every batch exactly once, each folder's in its order.
    assert sorted(b for _, _, b, _ in out) == [(f, k) for f, n in enumerate(sizes) for k in range(n)]
    for f in range(len(sizes)):
        assert [b[1] for _, g, b, _ in out if g == f] == list(range(sizes[f]))
    assert all(0 <= lane < writers for lane, *_ in out)
    # While folders are left to open, a folder's batches all go to the lane that opened it.
    first_lane: dict[int, int] = {}
    for lane, folder, _, taken in out:
        first_lane.setdefault(folder, lane)
        if taken <= len(sizes):
            assert lane == first_lane[folder], (lane, folder, out)


@given(st.lists(st.integers(1, 6), min_size=1, max_size=8), st.integers(1, 4))
def test_first_batch_after_one_folder(sizes: list[int], writers: int) -> None:
    source = Source(sizes)
    first = next(in_lanes(source, writers, batches_of(sizes)))
    assert first == (0, 0, (0, 0)) and source.taken == 1


def test_one_big_folder_is_shared_by_every_writer() -> None:
    """A mailbox of one folder: nothing else to give the other writers, so they share it."""
    got = list(in_lanes(Source([6]), 3, batches_of([6])))
    assert [b for _, _, b in got] == [(0, k) for k in range(6)]
    assert {lane for lane, _, _ in got} == {0, 1, 2}


def test_lanes_take_turns() -> None:
    got = [(lane, folder) for lane, folder, _ in in_lanes(Source([3, 1, 2]), 2, batches_of([3, 1, 2]))]
    # Lane 0 keeps folder 0; lane 1 finishes folder 1, then opens folder 2.
    assert got == [(0, 0), (1, 1), (0, 0), (1, 2), (0, 0), (1, 2)]


def test_lanes_take_turns_in_runs() -> None:
    """Runs of batches from one folder: the reader selects each folder once a run, not a batch."""
    got = [(lane, folder) for lane, folder, _ in in_lanes(Source([6, 5]), 2, batches_of([6, 5]), 4)]
    # Lane 0's folder runs out halfway through its second turn: it shares folder 1 for the rest.
    assert got == [(0, 0)] * 4 + [(1, 1)] * 4 + [(0, 0)] * 2 + [(0, 1)]


@given(st.lists(st.integers(0, 9), max_size=8), st.integers(1, 4), st.integers(1, 4))
def test_every_turn_is_a_whole_run_but_the_last(sizes: list[int], writers: int, run: int) -> None:
    got = [lane for lane, _, _ in in_lanes(Source(sizes), writers, batches_of(sizes), run)]
    turns = [got[k : k + run] for k in range(0, len(got), run)]
    # Cut in runs, each run is one lane's, the lanes in turn: a shorter turn only at the end.
    assert all(len(set(t)) == 1 for t in turns)
    assert [t[0] for t in turns] == [k % writers for k in range(len(turns))]
