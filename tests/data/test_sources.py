"""Compressed chat files, `datasets` data sets (saved or in memory), and the refusals of everything else."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import random
import zipfile

import pyarrow as pa
import pytest

from fusechat.data.conversations import Conversations
from fusechat.data.prepare import prepare
from fusechat.data.readers import FileSource
from fusechat.data.sources import open_source
from fusechat.errors import FusechatError
from tests.data.chatdata import CHATS, as_format

RECORDS = [as_format(c, "openai", f"c{i}") for i, c in enumerate(CHATS)]
JSONL = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS).encode()
A = {"role": "assistant", "content": "ok"}
JSON_LIST = json.dumps(RECORDS, indent=1, ensure_ascii=False).encode()


def zstd(data: bytes) -> bytes:
    return pa.compress(data, codec="zstd", asbytes=True)


COMPRESSORS = {"gz": gzip.compress, "zst": zstd, "bz2": bz2.compress, "xz": lambda b: lzma.compress(b, preset=0)}


def read(path) -> list:
    return [r.data for r in FileSource(path).records()]


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
@pytest.mark.parametrize(("inner", "text"), [("jsonl", JSONL), ("json", JSON_LIST)])
def test_compressed_json_and_jsonl_read_as_the_plain_file(tmp_path, suffix, inner, text):
    path = tmp_path / f"chats.{inner}.{suffix}"
    path.write_bytes(COMPRESSORS[suffix](text))
    source = FileSource(path)
    assert source.kind == inner
    assert read(path) == RECORDS
    assert source.describe()["compression"] == {"gz": "gzip", "zst": "zstd", "bz2": "bzip2", "xz": "xz"}[suffix]


def test_compression_is_found_from_the_bytes_not_the_name(tmp_path):
    path = tmp_path / "chats.jsonl"  # gzip data without .gz: read all the same
    path.write_bytes(gzip.compress(JSONL))
    assert read(path) == RECORDS
    plain = tmp_path / "chats.jsonl.gz"
    plain.write_bytes(JSONL)
    with pytest.raises(FusechatError, match=r"chats.jsonl.gz: named .gz but its data is not gzip \(starts with"):
        FileSource(plain)


@pytest.mark.parametrize("suffix", ["gz", "zst", "xz"])
def test_a_cut_compressed_file_keeps_its_complete_records(tmp_path, suffix):
    """pyarrow's zstd stream drops the last raw chunk it read (about 1 MB) with the cut; the others keep all."""
    rng = random.Random(0)  # text that compresses as real chats do (not a few repeated records)
    chats = [[{"role": "user", "content": "".join(rng.choices("abcdefgh ijklmnop", k=300))}, A] for _ in range(12000)]
    text = "".join(json.dumps({"messages": c}) + "\n" for c in chats).encode()
    blob = COMPRESSORS[suffix](text)
    path = tmp_path / f"cut.jsonl.{suffix}"
    path.write_bytes(blob[: len(blob) * 2 // 3])
    source = FileSource(path)
    rows = [r.data for r in source.records()]
    assert 1000 < len(rows) < 12000 and rows == [{"messages": c} for c in chats[: len(rows)]]
    assert source.cut is not None and source.cut.complete_records == len(rows)


def test_corrupt_compressed_data_is_one_line_naming_the_file(tmp_path):
    blob = bytearray(gzip.compress(JSONL * 50))
    blob[len(blob) // 2 : len(blob) // 2 + 16] = b"\xff" * 16
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(FusechatError, match=r"bad.jsonl.gz: its gzip data is corrupt \(.*\); download or compress"):
        read(path)


def test_archives_binary_files_and_compressed_parquet_are_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "chats.zip", "w") as z:
        z.writestr("chats.jsonl", JSONL)
    with pytest.raises(FusechatError, match="chats.zip: is a zip archive, not a data file; extract it"):
        open_source(tmp_path / "chats.zip")
    (tmp_path / "weights.jsonl").write_bytes(b"\x00\x01\x02garbage" * 10)
    with pytest.raises(FusechatError, match=r"weights.jsonl: binary data .* not UTF-8 text; expected JSON Lines"):
        open_source(tmp_path / "weights.jsonl")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "c.parquet")
    (tmp_path / "c.parquet.gz").write_bytes(gzip.compress((tmp_path / "c.parquet").read_bytes()))
    with pytest.raises(FusechatError, match="Parquet inside gzip; decompress it"):
        open_source(tmp_path / "c.parquet.gz")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FusechatError, match="not a `datasets` save_to_disk one .*; expected JSON Lines"):
        open_source(tmp_path / "empty_dir")


def test_prepare_reads_a_gzipped_jsonl(tmp_path, bpe_pivot):
    path = tmp_path / "chats.jsonl.gz"
    path.write_bytes(gzip.compress(JSONL))
    out = prepare([path], bpe_pivot, tmp_path / "out", max_length=512)
    conv = Conversations(out)
    assert conv.ids == ["c0", "c1", "c2"]
    assert conv.manifest["inputs"][0]["compression"] == "gzip"


# ---------------------------------------------------------------- datasets
def test_a_saved_dataset_and_an_in_memory_one(tmp_path, bpe_pivot):
    datasets = pytest.importorskip("datasets")
    trl = [{"prompt": c[:-1], "completion": c[-1:]} for c in CHATS]
    ds = datasets.Dataset.from_list(trl)
    ds.save_to_disk(str(tmp_path / "saved"))
    source = open_source(tmp_path / "saved")
    assert [r.data for r in source.records()] == trl
    assert source.describe()["kind"] == "datasets" and len(source.describe()["sha256"]) == 64

    out = prepare([tmp_path / "saved"], bpe_pivot, tmp_path / "from_disk", max_length=512)
    texts = Conversations(out).texts
    again = prepare([ds], bpe_pivot, tmp_path / "from_memory", max_length=512)  # the object itself
    assert Conversations(again).texts == texts
    assert [Conversations(out).messages(i) for i in range(3)] == CHATS
    assert Conversations(again).manifest["inputs"][0]["format"] == "prompt_completion"


def test_dataset_dicts_are_refused_with_their_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([as_format(CHATS[1], "openai", "x")])
    dd = datasets.DatasetDict({"train": ds, "test": ds})
    with pytest.raises(FusechatError, match=r"a DatasetDict with splits \(train, test\); give one split"):
        open_source(dd)
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(FusechatError, match=r"a saved DatasetDict with splits \(test, train\); give one split's dir"):
        open_source(tmp_path / "dd")
    assert [r.data["id"] for r in open_source(tmp_path / "dd" / "train").records()] == ["x"]


def test_a_saved_dataset_without_the_datasets_package(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(RECORDS).save_to_disk(str(tmp_path / "saved"))
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # as if not installed: import fails
    with pytest.raises(FusechatError, match=r"saved: a `datasets` save_to_disk directory; .*fusechat\[datasets\]"):
        open_source(tmp_path / "saved")
