"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest
import torch

from tests.stores import KINDS, save_model_dir, write_conversations, write_teacher_store


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test on one torch thread: tiny models run fastest so, and parallel test processes do not fight over
    the cores (restored after the test)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """Three tiny models of different tokenizer kinds and their teacher stores over the same conversations."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("align-world")
    conv = write_conversations(root / "conv")
    dirs, stores = {}, {}
    for seed, (kind, make) in enumerate(KINDS.items()):
        dirs[kind] = save_model_dir(root / "models" / kind, make(), seed=seed)
        stores[kind] = write_teacher_store(root / "stores" / kind, dirs[kind], conv)
    return {"root": root, "conv": conv, "models": dirs, "stores": stores}
