"""Compiled (numba) kernels of the merge methods: the engine's fast path, equal to the torch functions.

The torch functions of `merge/methods/` are the reference: short, readable, checked against mergekit. They
make several whole passes per tensor (fp32 copies of every input, task vectors, masks, sign election), which
made the merges CPU-bound, several times slower than the disk. The kernels here fuse each method into a few parallel
sweeps over the raw (bf16) inputs. `run.merge_tensor` is the entry point; nothing here is imported until a
merge runs, so importing fusechat never imports numba.
"""
