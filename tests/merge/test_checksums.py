"""Inputs with a manifest are checked against their sha256 while the merge reads them, not in a pass before.

The merge reads every input byte anyway; hashing those bytes as they arrive (in file order) replaces a
separate read of every file. These tests hold that the check still catches what it caught before, names the
file, publishes nothing, and falls back to hashing the whole file when reads do not go through it in order.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from fusechat import manifest
from fusechat.errors import FusechatError
from fusechat.merge import checkpoint, merge, simple_config
from tests.merge.checkpoints import make_family


def with_manifest(directory):
    """Give a model directory a fusechat manifest recording its weight files' sizes and sha256."""
    names = sorted(p.name for p in directory.glob("*.safetensors"))
    entries = manifest.file_entries(directory, names)
    manifest.write_manifest(directory, {"stage": "train", "files": entries}, complete=True)
    return directory


def write_in_order(path, tensors, names):
    """A safetensors file with its tensors laid out in the order `names` (save_file picks its own order)."""
    header, offset = {}, 0
    for n in names:
        size = tensors[n].numel() * tensors[n].element_size()
        header[n] = {"dtype": "BF16", "shape": list(tensors[n].shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    data = b"".join(tensors[n].contiguous().view(torch.uint8).numpy().tobytes() for n in names)
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data)


def flip_a_byte(path, offset_from_end=100):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def counted_hashes(monkeypatch):
    """Paths whose whole file was hashed by `sha256_file` (the separate pass the merge avoids)."""
    seen = []
    whole = manifest.sha256_file
    monkeypatch.setattr(manifest, "sha256_file", lambda p, *a: seen.append(p.name) or whole(p, *a))
    monkeypatch.setattr(manifest, "_VERIFIED", {})
    return seen


def test_inputs_are_hashed_as_they_are_read(tmp_path, counted_hashes):
    base, a, b = (with_manifest(d) for d in make_family(tmp_path, seed=1, shards=(2, 2, 2), dtype=torch.bfloat16))
    counted_hashes.clear()
    out = merge(simple_config("ties", base, [a, b], weights=[1, 1], densities=[0.5, 0.5]), tmp_path / "out")
    assert not [n for n in counted_hashes if n.endswith(".safetensors")]
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    for d in (base, a, b):  # each file is recorded as verified in this process
        for f in d.glob("*.safetensors"):
            st = f.stat()
            assert (str(f.resolve()), st.st_size, st.st_mtime_ns) in manifest._VERIFIED


@pytest.mark.parametrize("which", ["base", "target"])
def test_a_corrupted_input_fails_the_merge_and_publishes_nothing(tmp_path, counted_hashes, which):
    base, a, b = (with_manifest(d) for d in make_family(tmp_path, seed=2, dtype=torch.bfloat16))
    victim = next((base if which == "base" else b).glob("*.safetensors"))
    flip_a_byte(victim)  # same size, still parses: only the checksum can tell
    with pytest.raises(FusechatError, match=f"{victim}: does not match the checksum"):
        merge(simple_config("ties", base, [a, b], weights=[1, 1], densities=[0.5, 0.5]), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial*"))


def test_reads_out_of_file_order_fall_back_to_hashing_the_whole_file(tmp_path, counted_hashes):
    """A target whose file orders its tensors unlike the base's is read with jumps: hashed whole, still checked."""
    base, a, b = make_family(tmp_path, seed=3, dtype=torch.bfloat16)
    tensors = load_file(b / "model.safetensors")
    write_in_order(b / "model.safetensors", tensors, sorted(tensors, key=lambda n: n[::-1]))
    assert checkpoint.Checkpoint(b).names_in_file_order() != checkpoint.Checkpoint(a).names_in_file_order()
    for d in (base, a, b):
        with_manifest(d)
    counted_hashes.clear()
    merge(simple_config("linear", None, [a, b], weights=[1, 1]), tmp_path / "ok")
    assert counted_hashes.count("model.safetensors") == 1  # b's file, hashed whole at the end
    flip_a_byte(b / "model.safetensors")
    with pytest.raises(FusechatError, match="does not match the checksum"):
        merge(simple_config("linear", None, [a, b], weights=[1, 1]), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_a_tail_the_merge_does_not_read_is_still_checked(tmp_path, counted_hashes):
    """An input with an extra tensor after all the merged ones: that tail is read and hashed at the end."""
    base, a, b = make_family(tmp_path, seed=4, dtype=torch.bfloat16)
    tensors = load_file(b / "model.safetensors")
    tensors["zzz.extra"] = torch.ones(7, dtype=torch.bfloat16)  # sorts last in the file; not in the base (a)
    save_file(tensors, str(b / "model.safetensors"))
    for d in (base, a, b):
        with_manifest(d)
    counted_hashes.clear()
    merge(simple_config("linear", None, [a, b], weights=[1, 1]), tmp_path / "ok")
    assert not counted_hashes
    flip_a_byte(b / "model.safetensors", offset_from_end=2)  # inside the extra tensor
    with pytest.raises(FusechatError, match=f"{b / 'model.safetensors'}: does not match the checksum"):
        merge(simple_config("linear", None, [a, b], weights=[1, 1]), tmp_path / "bad")


def test_a_base_that_is_also_an_input_is_hashed_once(tmp_path, counted_hashes):
    """SLERP lists the base among its models: both reads of each tensor run at once; the file is hashed once."""
    base, a, _ = (with_manifest(d) for d in make_family(tmp_path, seed=5, shards=(2, 2, 2), dtype=torch.bfloat16))
    counted_hashes.clear()
    cfg = {"merge_method": "slerp", "base_model": str(base), "models": [{"model": str(base)}, {"model": str(a)}]}
    for i in range(3):  # the race between the two reads, given a few chances to show
        merge({**cfg, "parameters": {"t": 0.3}}, tmp_path / f"out{i}")
        manifest._VERIFIED.clear()
    assert not counted_hashes
