"""Spreading work by weight: every item once, a bounded number of batches, none much heavier than
its share."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backup_pipeline.core.batching import spread_by_weight

GIB = 1024**3


@given(
    weights=st.lists(st.integers(min_value=0, max_value=10**12), max_size=60),
    target=st.integers(min_value=1, max_value=10**12),
    max_batches=st.integers(min_value=1, max_value=40),
)
def test_every_item_lands_once_in_at_most_max_batches_of_about_their_share(
    weights: list[int], target: int, max_batches: int
) -> None:
    batches = spread_by_weight(weights, target=target, max_batches=max_batches)

    assert sorted(i for batch in batches for i in batch) == list(range(len(weights)))
    assert all(batches) and len(batches) <= max(1, min(max_batches, len(weights)))
    if weights:
        loads = [sum(weights[i] for i in batch) for batch in batches]
        assert max(loads) <= sum(weights) / len(batches) + max(weights)
    assert spread_by_weight(weights, target=target, max_batches=max_batches) == batches


def test_one_agents_forty_large_dumps_fill_every_allowed_batch() -> None:
    batches = spread_by_weight([50 * GIB] * 40, target=4 * GIB, max_batches=32)
    assert len(batches) == 32
    assert sorted(len(b) for b in batches) == [1] * 24 + [2] * 8


def test_small_work_stays_in_one_batch() -> None:
    assert spread_by_weight([2048] * 1000, target=4 * GIB, max_batches=32) == [list(range(1000))]
    assert spread_by_weight([], target=1, max_batches=4) == []


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        spread_by_weight([1], target=0, max_batches=1)
