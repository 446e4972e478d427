"""Planning batched encode/generate calls over windows from many requests."""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Sequence


def plan_batches(keys: Sequence[Hashable], lengths: Sequence[int], max_batch: int) -> list[list[int]]:
    """Group item indices into batches of at most ``max_batch``.

    Items only share a batch when their keys match (a ``generate`` call takes one beam size and one
    temperature). Within a key, items are sorted by length, longest first, so each batch pads to a
    context close to all its members and long windows do not drag short ones to 30 s.
    """
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        groups[key].append(index)
    batches: list[list[int]] = []
    for members in groups.values():
        members.sort(key=lambda i: (-lengths[i], i))
        batches.extend(members[i : i + max_batch] for i in range(0, len(members), max_batch))
    return batches
