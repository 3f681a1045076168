#!/usr/bin/env bash
# The GPU check of fusechat's training (issue 13): run on a machine with one or more CUDA GPUs, from the repository
# root, in an environment where `pip install -e '.[test]'` was done (and liger-kernel, if it is to be compared).
#   1. the CUDA-relevant tests (the loss in bf16/fp16 against fp32 on the GPU, the fp32 path against the dense one,
#      the compiled elementwise path against the eager one);
#   2. the loss benchmark at the issue's four shapes (fusion vs CLM-only vs dense vs Liger: time, peak memory,
#      ratios; fusion and CLM-only both with the eager and the compiled (torch.compile) elementwise work), one
#      piece's elementwise work alone (eager vs compiled), and a sweep of the chunk memory at the largest shape;
#   3. a short `fusechat train` of a random-weight 1.2B pivot: one GPU (the loss compiled, then eager), FSDP2 on
#      one process, and with two or more GPUs DDP and FSDP2 over two processes (checking NCCL does not guess
#      device ids).
# Prints the figures; everything is also kept under $OUT (default /tmp/fusechat-gpu-check).
#   bash benchmarks/gpu_check.sh                 # all of it (about 10 minutes on one H200 before the compiled
#                                                # path and the teacher section were added; not yet timed since)
#   PARTS="tests loss" bash benchmarks/gpu_check.sh   # some sections: tests, loss, teach, train (QUICK=1: tests loss)
#   SMOKE=1 bash benchmarks/gpu_check.sh         # the script itself on CPU: small shapes, a small pivot (no figures)
# On a machine that cannot download, carry the wheels of benchmarks/gpu_wheels.sh in .whl/: they are installed
# into a scratch folder first (docs/benchmarks.md, "How to run the GPU check").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-/tmp/fusechat-gpu-check}
mkdir -p "$OUT"
if [ -z "${SMOKE:-}" ] && compgen -G ".whl/*.whl" > /dev/null; then  # carried wheels shadow the image's older or missing packages
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$OUT/site" .whl/*.whl
  export PYTHONPATH="$OUT/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
PARTS=" ${PARTS:-$([ -n "${QUICK:-}" ] && echo tests loss || echo tests loss teach train)} "
part() { [[ "$PARTS" == *" $1 "* ]] && echo "   (at ${SECONDS}s)"; }
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
$PY -c "import torch, os; assert os.environ.get('SMOKE') or torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, 'CUDA', torch.version.cuda, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU', '| GPUs:', torch.cuda.device_count())"
SMALL=(); [ -n "${SMOKE:-}" ] && SMALL=(--small)

if part tests; then
echo "== 1. tests (CUDA cases included where a GPU is present)"
$PY -m pytest tests/train/test_loss.py tests/train/test_loss_half.py tests/train/test_loss_compiled.py -q -p no:cacheprovider \
  2>&1 | tail -3 || echo "  TESTS FAILED (above)"
echo "-- the compiled loss against eager on the GPU, every option set (compiles a dozen graphs)"
[ -n "${SMOKE:-}" ] || $PY -m pytest tests/train/test_loss_compiled.py -q -p no:cacheprovider -m slow -k cuda 2>&1 \
  | tail -3 || echo "  TESTS FAILED (above)"
fi

if part loss; then
echo "== 2. loss benchmark (GPU: N 16,384, bf16, the issue's four shapes; median of 5 alternating rounds)"
$PY benchmarks/bench_loss.py "${SMALL[@]}" --json "$OUT/loss.json" 2>&1 | grep -v Warning
echo "-- one piece's elementwise work alone, eager vs compiled (128 rows of fp32 logits, bf16 gradient)"
$PY benchmarks/bench_loss.py "${SMALL[@]}" --piece 128 2>&1 | grep -v Warning
echo "-- chunk memory sweep at 262,144 x 4,096 (MiB)"
[ -n "${SMOKE:-}" ] || $PY benchmarks/bench_loss.py --shapes 262144x4096 --variants fusion,fusion_compiled,clm_compiled --chunk-memory 128,256,512,1024,4096 --rounds 3 2>&1 | grep -v Warning
fi

# ---- teacher pass (issue 14) -------------------------------------------------------------------------------
# `fusechat teach` tokens/s against a bare forward + log-softmax + top-k on the same batches, Qwen2.5-1.5B's shape
# with random weights and the real Qwen tokenizer, start-up and model loading apart (benchmarks/bench_teach_gpu.py).
# The GPU machine may have no network: copy the tokenizer folder into the (git-ignored) bench-out/ first, e.g.
#   mkdir -p bench-out/tokenizers && cp -r /work/shared/tokenizers/qwen2.5-coder-0.5b-instruct bench-out/tokenizers/
# TOKENIZER=DIR picks another folder; SKIP_TEACH=1 leaves the section out.
if part teach; then
echo "== T. teacher pass: teach vs bare forward + log-softmax + top-k (1.5B-shaped, bf16)"
TOKENIZER=${TOKENIZER:-bench-out/tokenizers/qwen2.5-coder-0.5b-instruct}
if [ -n "${SKIP_TEACH:-}" ]; then
  echo "  skipped (SKIP_TEACH)"
elif [ ! -d "$TOKENIZER" ]; then
  echo "  skipped: no tokenizer folder at $TOKENIZER (see the comment above this section)"
else
  TEACH_ARGS=(--tokenizer "$TOKENIZER" --json "$OUT/teach.json"); [ -n "${SMOKE:-}" ] && TEACH_ARGS+=(--shape tiny --device cpu --n 8)
  $PY benchmarks/bench_teach_gpu.py "${TEACH_ARGS[@]}" > "$OUT/teach.log" 2>&1 \
    && sed -n '/^{/,/^}/p' "$OUT/teach.log" || { echo "  FAILED: see $OUT/teach.log"; tail -5 "$OUT/teach.log"; }
fi
fi
# ---- end of the teacher pass section -----------------------------------------------------------------------

part train || exit 0
echo "== 3. fusechat train on a random-weight 1.2B pivot"
[ -d "$OUT/inputs/targets" ] || $PY benchmarks/gpu_train_setup.py "$OUT/inputs" "${SMALL[@]}"
ARGS=(--pivot "$OUT/inputs/pivot" --targets "$OUT/inputs/targets" --max-steps 10 --batch-size 4 --max-length 1024
      --lr 1e-5 --warmup 0 --logging-steps 5 --gradient-checkpointing --report-to none)
[ -n "${SMOKE:-}" ] && ARGS+=(--max-steps 2 --bf16 off) || ARGS+=(--bf16 on)
run() {  # name, launcher..., -- extra fusechat args
  local name=$1; shift
  local launcher=(); while [ "$1" != "--" ]; do launcher+=("$1"); shift; done; shift
  rm -rf "$OUT/train-$name"
  local t0=$(date +%s.%N)
  if "${launcher[@]}" -m fusechat train "${ARGS[@]}" --out "$OUT/train-$name" "$@" > "$OUT/train-$name.log" 2>&1; then
    local t1=$(date +%s.%N)
    $PY - "$OUT/train-$name" "$t0" "$t1" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1] + "/manifest.json"))
print(f"  ok: {m['steps']} steps, world {m['world_size']}, global batch {m['global_batch']}, train loss "
      f"{m['train_loss']:.4f}, wall {float(sys.argv[3]) - float(sys.argv[2]):.1f} s (with load and save)")
PYEOF
  else
    echo "  FAILED: see $OUT/train-$name.log"; tail -5 "$OUT/train-$name.log"
  fi
  grep -h "train_runtime\|Guessing device\|loss_kernel:" "$OUT/train-$name.log" | tail -3 | sed 's/^/  /' || true
}
echo "-- one GPU"; run one $PY --
echo "-- one GPU, the loss's elementwise work eager (--loss-kernel eager; the run above: auto = compiled)"
run one-eager $PY -- --loss-kernel eager
[ -n "${SMOKE:-}" ] && { echo "-- FSDP2: GPUs only"; exit 0; }
echo "-- FSDP2, one process"; run fsdp1 $PY -m torch.distributed.run --nproc_per_node 1 -- --fsdp
if [ "$NGPU" -ge 2 ]; then
  echo "-- DDP, two GPUs"; run ddp2 $PY -m torch.distributed.run --nproc_per_node 2 -- --batch-size 2
  echo "-- FSDP2, two GPUs"; run fsdp2 $PY -m torch.distributed.run --nproc_per_node 2 -- --batch-size 2 --fsdp
  echo "-- accelerate launch, two GPUs"; run accel2 accelerate launch --num_processes 2 -- --batch-size 2
else
  echo "-- DDP / FSDP2 over two GPUs: needs two GPUs ($NGPU here), not run"
fi
