"""Spreading work by weight: items (staged files by their bytes, say) over a few batches of similar
total weight, so that no batch holds much more than its share plus one item."""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def spread_by_weight(weights: Sequence[int], *, target: int, max_batches: int) -> list[list[int]]:
    """The items' indexes in batches of about `target` total weight, at most `max_batches` of them.

    As many batches as the total weight needs at `target` each (at least one, at most one per item
    and `max_batches`), filled heaviest item first into the lightest batch (longest-processing-time
    first): the heaviest batch is at most the mean plus one item. Deterministic; no batch is empty.
    """
    if target < 1 or max_batches < 1:
        raise ValueError("target and max_batches must be positive")
    if not weights:
        return []
    total = sum(max(w, 0) for w in weights)
    count = max(1, min(max_batches, len(weights), -(-total // target)))
    loads = [(0, i) for i in range(count)]  # (weight so far, batch index): a heap
    batches: list[list[int]] = [[] for _ in range(count)]
    for item in sorted(range(len(weights)), key=lambda i: (-max(weights[i], 0), i)):
        load, index = heapq.heappop(loads)
        batches[index].append(item)
        heapq.heappush(loads, (load + max(weights[item], 0), index))
    return [sorted(batch) for batch in batches if batch]
