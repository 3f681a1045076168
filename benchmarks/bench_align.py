"""Alignment and fusion figures, measured side by side in one run; see docs/benchmarks.md.

1. DTW: the compiled path against the plain Python O(n·m) reference on the same real token sequences (the
SmolLM2 and Qwen2.5 tokenizations of one ShareGPT text, ~1k tokens), paths checked identical. 2. Vocabulary
maps: build time of each map at real vocabulary sizes (Qwen 152k and Gemma 262k onto SmolLM2 49k), and the
peak memory of the `stats` map between the 49k and 262k vocabularies, in a child process. 3. With teacher
stores (--stores DIR holding one store per model name, made by `fusechat teach` on the same conversations):
the align stage's throughput and its cost against the source's teacher pass, and coverage and top-k mass kept
per source and map, then fusion throughput. 4. The exact offsets alignment with the tokenizers' normalisers read
(Qwen's NFC) against the rule without them, SmolLM2 onto Qwen, on a ShareGPT text and on its NFD form (every
composed character decomposed: a gap per accent or Hangul syllable), pairs counted and time per text.

Needs the real models installed (`fusechat models install ...`); without them, section 2 falls back to
synthetic vocabularies of the same sizes and sections 1 and 3 are skipped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

PIVOT = "smollm2-135m-instruct"
SOURCES = ("qwen2.5-coder-0.5b-instruct", "gemma-3-270m")
MAPS = ("exact", "prefix", "stats", "mined")


def installed(name: str) -> bool:
    from fusechat.models.packages import model_dir

    return (model_dir(name) / "tokenizer.json").is_file()


def real_text(tok, n_tokens: int) -> str:
    """ShareGPT text cut to exactly `n_tokens` tokens of `tok`."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from align_data import sharegpt_records

    text = ""
    for _, user, reply in sharegpt_records(400):
        text += user + "\n\n" + reply + "\n\n"
        if len(text) > n_tokens * 8:
            break
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return text[: enc["offset_mapping"][n_tokens - 1][1]]


def dtw_reference_c_cost(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """The reference as the authors ran it: a Python double loop, one C edit-distance call per cell."""
    from rapidfuzz.distance import Levenshtein

    from fusechat.align.dtw import dtw_reference

    def cost(x: str, y: str) -> int:
        d = Levenshtein.distance(x, y)
        return d if (x in y or y in x) else 10 * d

    return dtw_reference(a, b, cost)


def bench_dtw(n_tokens: int, repeats: int) -> dict:
    from fusechat.align.dtw import dtw_path, dtw_reference, vocab_strings
    from fusechat.align.vocab import vocab_bytes
    from fusechat.models.load import load_tokenizer

    piv, src = load_tokenizer(PIVOT), load_tokenizer(SOURCES[0])
    text = real_text(piv, n_tokens)
    pv, sv = vocab_strings(vocab_bytes(piv)), vocab_strings(vocab_bytes(src))
    a = [pv[i] for i in piv(text, add_special_tokens=False)["input_ids"]]
    b = [sv[i] for i in src(text, add_special_tokens=False)["input_ids"]]
    t0 = time.perf_counter()
    first = dtw_path(a, b)
    compile_s = time.perf_counter() - t0
    fast = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        path = dtw_path(a, b)
        fast.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ref = dtw_reference(a, b)
    ref_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_c = dtw_reference_c_cost(a, b)
    ref_c_s = time.perf_counter() - t0
    same = [tuple(p) for p in path.tolist()] == ref == ref_c and np.array_equal(first, path)
    fast_s = statistics.median(fast)
    return {
        "reference_c_cost_s": ref_c_s,
        "reference_c_cost_us_per_cell": ref_c_s / (len(a) * len(b)) * 1e6,
        "speedup_vs_c_cost_loop": ref_c_s / fast_s,
        "fast_min_s": min(fast),
        "speedup_best_run": ref_s / min(fast),
        "speedup_vs_c_cost_loop_best_run": ref_c_s / min(fast),
        "load_average": __import__("os").getloadavg()[0],
        "n": len(a),
        "m": len(b),
        "reference_s": ref_s,
        "reference_us_per_cell": ref_s / (len(a) * len(b)) * 1e6,
        "fast_s": fast_s,
        "first_call_s": compile_s,
        "speedup": ref_s / fast_s,
        "identical": same,
    }


def _load_vocab(name_or_size):
    from fusechat.align.vocab import Vocab, vocab_bytes
    from fusechat.models.load import load_tokenizer

    if isinstance(name_or_size, int):  # synthetic: random lowercase strings with a leading space half the time
        rng = np.random.default_rng(name_or_size)
        letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
        pieces = []
        for i in range(name_or_size):
            n = int(rng.integers(1, 12))
            pieces.append((b" " if i % 2 else b"") + letters[rng.integers(0, 26, n)].tobytes())
        return Vocab(pieces=pieces, partial=np.zeros(len(pieces), dtype=bool)), None
    tok = load_tokenizer(name_or_size)
    return vocab_bytes(tok), tok


def _stats_child(src, piv, queue) -> None:
    from fusechat.align import maps

    t0 = time.perf_counter()
    sv, _ = _load_vocab(src)
    pv, _ = _load_vocab(piv)
    rng = np.random.default_rng(0)
    n = 2_000_000  # co-aligned pairs as a 100k-conversation corpus would give (a few distinct per token)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()  # numpy and Python allocations of the counting and the map itself
    pairs = np.stack([rng.integers(0, len(sv), n), rng.integers(0, len(pv), n)], axis=1)
    uniq, counts = maps.count_pairs(pairs)
    del pairs
    t1 = time.perf_counter()
    maps.stats_map(sv, pv, uniq, counts)
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    queue.put(
        {
            "stats_map_s": time.perf_counter() - t1,
            "total_s": time.perf_counter() - t0,
            "pairs": int(n),
            "distinct_pairs": int(len(uniq)),
            "peak_rss_before_counting_mb": before,
            "counting_and_map_traced_peak_mb": traced_peak,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def bench_maps(real: bool, skip_mined: bool) -> dict:
    from fusechat.align import maps

    out = {}
    piv_key = PIVOT if real else 49_152
    t0 = time.perf_counter()
    pv, ptok = _load_vocab(piv_key)
    out["pivot_vocab_s"] = time.perf_counter() - t0
    for src_key in SOURCES if real else (151_936, 262_144):
        t0 = time.perf_counter()
        sv, _ = _load_vocab(src_key)
        row = {"source_tokens": len(sv), "vocab_bytes_s": time.perf_counter() - t0}
        t0 = time.perf_counter()
        exact = maps.exact_map(sv, pv)
        row["exact_s"], row["exact_mapped"] = time.perf_counter() - t0, int((exact >= 0).sum())
        if ptok is not None:
            t0 = time.perf_counter()
            pre = maps.prefix_map(sv, pv, ptok)
            row["prefix_s"], row["prefix_mapped"] = time.perf_counter() - t0, int((pre >= 0).sum())
        if not skip_mined:
            t0 = time.perf_counter()
            mined = maps.mined_map(sv, pv)
            row["mined_s"], row["mined_mapped"] = time.perf_counter() - t0, int((mined >= 0).sum())
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=_stats_child, args=(src_key, piv_key, q))
        p.start()
        row["stats"] = q.get()
        p.join()
        out[str(src_key)] = row
    return out


def bench_stores(stores: Path, work: Path, teach_times: dict, sources=SOURCES, fusion: bool = True) -> dict:
    from fusechat.align.stage import align
    from fusechat.fuse import fuse
    from fusechat.store.format import TopKStore

    piv = stores / PIVOT
    out = {}
    aligned = []
    for src in sources:
        for vmap in MAPS:
            for alignment in ("offsets",) if vmap != "exact" else ("offsets", "dtw"):
                dest = work / f"{src}-{vmap}-{alignment}"
                t0 = time.perf_counter()
                align(piv, stores / src, dest, alignment=alignment, vocab_map=vmap)
                secs = time.perf_counter() - t0
                m = TopKStore(dest).manifest
                row = {
                    "seconds": secs,
                    "map_build_seconds": m["vocab_map"]["build_seconds"],
                    "mapped_tokens": m["vocab_map"]["mapped_tokens"],
                    "source_tokens": m["vocab_map"]["source_tokens"],
                    "conversations_per_s": m["counts"]["conversations"] / secs,
                    "tokens_per_s": m["counts"]["tokens"] / secs,
                    **m["coverage"],
                }
                if src in teach_times:
                    row["share_of_teacher_pass"] = secs / teach_times[src]
                out[f"{src}/{vmap}/{alignment}"] = row
                if vmap == "prefix":
                    aligned.append(dest)
    for method in ("mince", "avgce", "token-mince") if fusion else ():
        t0 = time.perf_counter()
        dest = fuse(piv, aligned, work / f"multi-{method}", method=method)
        secs = time.perf_counter() - t0
        m = TopKStore(dest).manifest
        out[f"fuse/{method}"] = {"seconds": secs, "selection": m["selection"]}
    return out


def bench_normaliser(n_tokens: int, repeats: int) -> dict:
    """Offsets alignment with and without the normalisers, on ShareGPT text as written and decomposed (NFD)."""
    import unicodedata

    from fusechat.align.stage import next_token_match, vocab_context
    from fusechat.align.vocab import vocab_bytes
    from fusechat.models.load import load_tokenizer
    from fusechat.store.format import TopKRecord

    piv, src = load_tokenizer(PIVOT), load_tokenizer(SOURCES[0])
    ctx = vocab_context(vocab_bytes(piv), vocab_bytes(src), "offsets")
    plain = dict(ctx, piv_normalize=None, src_normalize=None)
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from align_data import sharegpt_records

    def decomposable(t: str) -> int:
        return len(unicodedata.normalize("NFD", t)) - len(t)

    pairs = [user + "\n\n" + reply + "\n\n" for _, user, reply in sharegpt_records(2000)]
    text = ""  # the ShareGPT records richest in characters NFD decomposes (accents, Hangul), ~4 n_tokens chars
    for pair in sorted(pairs, key=decomposable, reverse=True):
        if len(text) < n_tokens * 4:
            text += pair
    out = {}
    for label, t in (("as written", text), ("NFD", unicodedata.normalize("NFD", text))):
        recs = []
        for tok in (piv, src):
            enc = tok(t, add_special_tokens=False, return_offsets_mapping=True)
            none = np.zeros(0, dtype=np.int32)
            ids, offs = np.array(enc["input_ids"]), np.array(enc["offset_mapping"]).reshape(-1, 2)
            recs.append(TopKRecord("x", ids, offs, none, none, none, none, 0.0, 0))
        row = {
            "chars": len(t),
            "decomposed_chars": len(t) - len(unicodedata.normalize("NFC", t)),
            "pivot_tokens": len(recs[0].input_ids),
            "source_tokens": len(recs[1].input_ids),
        }
        before, after = (next_token_match("offsets", *recs, c, t) for c in (plain, ctx))
        row["pairs"] = int((after >= 0).sum())
        row["pivot_tokens_paired_differently"] = int((before != after).sum())
        times: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(repeats):  # alternated, so load on the shared machine hits both alike
            for name, c in (("without", plain), ("with", ctx)):
                t0 = time.perf_counter()
                next_token_match("offsets", *recs, c, t)
                times[name].append(time.perf_counter() - t0)
        for name, ts in times.items():
            row[f"ms_{name}"] = round(1e3 * statistics.median(ts), 3)
        row["ratio"] = round(row["ms_with"] / row["ms_without"], 2)
        out[label] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", type=Path, help="directory with one teacher store per model name")
    ap.add_argument("--teach-times", type=Path, help="file of 'model seconds' lines from the teacher passes")
    ap.add_argument("--work", type=Path, default=Path("bench-out/align"))
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--skip-mined", action="store_true")
    ap.add_argument("--only", choices=("dtw", "maps", "stores", "normaliser"))
    ap.add_argument("--sources", nargs="+", default=list(SOURCES), help="sources for the stores section")
    ap.add_argument("--no-fusion", action="store_true", help="stores section: align only")
    a = ap.parse_args()
    real = all(installed(m) for m in (PIVOT, *SOURCES))
    results: dict = {"real_models": real}
    if real and a.only in (None, "dtw"):
        results["dtw"] = bench_dtw(a.tokens, a.repeats)
        print(json.dumps({"dtw": results["dtw"]}, indent=1), flush=True)
    if real and a.only in (None, "normaliser"):
        results["normaliser"] = bench_normaliser(a.tokens, a.repeats)
        print(json.dumps({"normaliser": results["normaliser"]}, indent=1), flush=True)
    if a.only in (None, "maps"):
        results["maps"] = bench_maps(real, a.skip_mined)
        print(json.dumps({"maps": results["maps"]}, indent=1), flush=True)
    if a.stores and a.only in (None, "stores"):
        times = {}
        if a.teach_times and a.teach_times.is_file():
            times = {ln.split()[0]: float(ln.split()[1]) for ln in a.teach_times.read_text().splitlines() if ln}
        results["stores"] = bench_stores(a.stores, a.work, times, a.sources, not a.no_fusion)
        print(json.dumps({"stores": results["stores"]}, indent=1), flush=True)
    a.work.mkdir(parents=True, exist_ok=True)
    tag = "-".join([a.only or "all", *(a.sources if a.only == "stores" else [])])
    (a.work / f"results-{tag}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
