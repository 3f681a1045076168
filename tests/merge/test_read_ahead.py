"""The merge reads tensors ahead of the merge, in plan order, at most two ahead and within its byte budget."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from fusechat.merge.engine import _ReadAhead


@pytest.mark.parametrize("sizes", [[64, 64, 8, 8, 8, 8, 1, 8], [1, 1, 1, 1, 1], [8, 64, 8, 64, 8], [5]])
def test_order_depth_and_budget(sizes):
    tensors = [f"t{i}" for i in range(len(sizes))]
    started: list[str] = []

    def load(name: str) -> tuple[None, list[str]]:
        started.append(name)
        return None, [name]

    with ThreadPoolExecutor(1) as reader:
        ahead = _ReadAhead(reader, load, tensors, sizes)
        assert len(ahead.queue) == min(len(sizes), 2 if sizes[0] + sizes[1 % len(sizes)] <= ahead.budget else 1)
        for i, name in enumerate(tensors):
            _, got = ahead.next()
            assert got == [name]
            # held: this tensor (being merged) and the ones read ahead, never past the budget or DEPTH
            assert ahead.held == sizes[i] + sum(sizes[i + 1 : ahead.submitted]) <= ahead.budget
            assert len(ahead.queue) <= _ReadAhead.DEPTH
            if i + 1 < len(sizes):
                assert ahead.queue, "the next tensor is always being read while this one merges"
    assert started == tensors and ahead.budget == 2 * max(sizes)
