"""Count malformed inputs tried and how each ended, for docs/reliability.md ("Bad input").

Draws `--files` files per chat format and file kind from malformed.py (hypothesis, a fixed seed), runs the
prepare entry point on each twice (strict and --skip-invalid) with every check of the tests, then loads every
generated recipe and merge config (bad_configs.py). Any traceback or wrong result stops the script with it.

    PYTHONPATH=src:tests:. python -m tests.faults.count_bad_input --files 200 --huge 3
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from fusechat.errors import FusechatError
from fusechat.merge.config import load_config
from fusechat.run.recipe import load_recipe
from tests.data.chatdata import train_tokenizer
from tests.faults.bad_configs import merge_cases, recipe_cases
from tests.faults.malformed import CONTAINERS, FORMATS, KEEP, LONG, REFUSING_TEMPLATE, SUFFIX, cases, kinds_for
from tests.faults.oracle import run_prepare
from tests.faults.oracle import write_file as write


def count_data(files: int, huge: int, tmp: Path) -> tuple[Counter, Counter, Counter]:
    pivot = train_tokenizer(tmp, "bpe")
    template = tmp / "refusing.jinja"
    template.write_text(REFUSING_TEMPLATE)
    runs: Counter = Counter()
    records: Counter = Counter()
    kinds: Counter = Counter()
    for fmt, container in itertools.product(FORMATS, CONTAINERS):
        _runner(fmt, container, files, tmp, pivot, template, runs, records, kinds)()
        _runner(fmt, container, huge, tmp, pivot, template, runs, records, kinds, huge=True)()
    return runs, records, kinds


def _runner(
    fmt: str, container: str, files: int, tmp: Path, pivot: Path, template: Path, *counters: Counter, huge=False
):
    """A hypothesis-driven loop over `files` drawn files of one format and file kind, counting as it goes.
    1 MB messages take seconds each to tokenize, so they come in their own files (`huge`: one per file)."""
    runs, records, kinds = counters
    kinds_here = [k for k in kinds_for(fmt, container) if k != "message_1mb"]

    @seed(7)
    @settings(max_examples=files, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from(kinds_here), min_size=1, max_size=8), st.data())
    def one(chosen, data):
        if huge:
            chosen = [*chosen[:3], "message_1mb"]
        drawn = [data.draw(cases(fmt, container, k)) for k in chosen]
        work = Path(tempfile.mkdtemp(dir=tmp))
        try:
            path = work / f"chats{SUFFIX[container]}"
            if not write(path, container, drawn):
                runs["not representable in this file kind"] += 1
                return
            for c in drawn:
                kinds[c.kind] += 1
                outcome = "kept" if c.outcome == KEEP else "dropped as too long" if c.outcome == LONG else None
                records[outcome or f"rejected: {c.outcome}"] += 1
            for skip in (False, True):
                ended = run_prepare(path, drawn, pivot, template, work / f"out-{skip}", skip)
                mode = "--skip-invalid" if skip else "strict"
                runs[f"{mode}: {'succeeded' if ended == 'ok' else 'one ' + ended}"] += 1
        finally:
            shutil.rmtree(work)

    return one


def count_configs(tmp: Path) -> Counter:
    ended: Counter = Counter()
    for what, load, generated in (
        ("recipe", load_recipe, recipe_cases()),
        ("merge config", load_config, merge_cases()),
    ):
        for _label, text, paths in generated:
            path = tmp / "config.yaml"
            path.write_bytes(text if isinstance(text, bytes) else text.encode())
            try:
                load(path)
            except FusechatError as e:
                msg = str(e)
                one_line = "\n" not in msg and msg.startswith(f"{path}: ")
                named = not paths or any(msg.startswith(f"{path}: {p}: ") for p in paths)
                ended[f"{what}: {'one error line naming the key' if one_line and named else 'UNCLEAR ERROR'}"] += 1
                continue
            ended[f"{what}: ACCEPTED"] += 1
    return ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100, help="files per format x file kind (default 100)")
    parser.add_argument("--huge", type=int, default=3, help="files with a 1 MB message, per format x kind (3)")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs, records, kinds = count_data(args.files, args.huge, Path(tmp))
        configs = count_configs(Path(tmp))
    for title, counts in (
        ("prepare runs", runs),
        ("records (outcome required and checked)", records),
        ("records by kind", kinds),
        ("configs", configs),
    ):
        print(f"\n{title}: {sum(counts.values())}")
        for key, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"  {n:7d}  {key}")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
