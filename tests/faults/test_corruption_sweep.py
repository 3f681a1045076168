"""Many random corruptions of a store shard and a checkpoint: every one is refused by name before use.

The CLI cases (one truncation and one bit flip per stage: test_stage_faults.py) show the error reaches
the user as one line; this sweep shows the check does not depend on where the damage is, and counts how many
of the damaged files the format's own reader would have accepted as data without the checksum.
"""

from __future__ import annotations

import random
import shutil

import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from fusechat.errors import FusechatError
from fusechat.models.load import check_model_dir
from fusechat.store.format import TopKStore
from tests.faults.common import manifest, record

FLIPS, CUTS = 40, 10


def damage(path, rng: random.Random, cut: bool) -> None:
    data = bytearray(path.read_bytes())
    if cut:
        del data[rng.randrange(1, len(data)) :]
    else:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def accepted_by(reader, path) -> bool:
    try:
        reader(path)
        return True
    except Exception:  # noqa: BLE001 (any failure of the format's own reader counts as caught by it)
        return False


def sweep(tmp_path, original, victim_of, open_and_read, plain_reader, what: str, seed: int) -> None:
    rng = random.Random(seed)
    parsed = caught = 0
    for i in range(FLIPS + CUTS):
        copy = tmp_path / f"{what}-{i}"
        shutil.copytree(original, copy)
        victim = victim_of(copy)
        damage(victim, rng, cut=i >= FLIPS)
        parsed += accepted_by(plain_reader, victim)
        with pytest.raises(FusechatError) as e:
            open_and_read(copy)
        assert victim.name in str(e.value)
        caught += 1
        shutil.rmtree(copy)
    record("corruption-sweep", what, flips=FLIPS, truncations=CUTS, caught=caught, accepted_by_plain_reader=parsed)


def test_store_shard_corruptions_are_all_caught(world, tmp_path):
    def read(store):
        s = TopKStore(store)
        for i in range(s.n_shards):
            s.read_shard(i)

    sweep(
        tmp_path, world["aligned"], lambda d: d / manifest(d)["shards"][3]["file"], read, pq.read_table,
        "store-shard", seed=5,
    )  # fmt: skip


def test_checkpoint_corruptions_are_all_caught(world, tmp_path):
    from fusechat.merge import merge, simple_config

    base, a, b = world["merge_inputs"]
    ckpt = merge(simple_config("linear", None, [str(a), str(b)], weights=[0.5, 0.5]), tmp_path / "merged",
                 max_shard_bytes=4_000_000)  # fmt: skip
    sweep(
        tmp_path, ckpt, lambda d: d / sorted(manifest(d)["files"])[1], check_model_dir, load_file,
        "checkpoint", seed=6,
    )  # fmt: skip
