"""Outputs honour the umask: a file written through the atomic writer has the mode any new file would get."""

from __future__ import annotations

import os
import stat

import pytest

from fusechat.manifest import atomic_write_bytes, atomic_write_json


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_0666_less_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    atomic_write_bytes(tmp_path / "model.safetensors", b"x")
    atomic_write_json(tmp_path / "config.json", {"a": 1})
    for name in ("model.safetensors", "config.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]  # no temporaries


def test_merge_shard_writer_honours_the_umask(tmp_path, umask):
    from fusechat.merge.shard_file import ShardFile

    umask(0o022)
    f = ShardFile(tmp_path / "a.safetensors")
    f.write(b"\0" * 8)
    f.close()
    assert stat.S_IMODE((tmp_path / "a.safetensors").stat().st_mode) == 0o644
