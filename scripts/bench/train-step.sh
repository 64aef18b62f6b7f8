#!/usr/bin/env bash
# Forward + backward tokens/s, GFLOP/s and peak RSS: dapt vs PyTorch (CPU,
# transformers LlamaForCausalLM with SDPA attention, fp32) on the same model
# config, batch and thread count, median of STEPS steps after 2 warm-up steps.
# Usage: scripts/bench/train-step.sh [THREADS...]   (default: 1)
#        ONLY=small|medium|long-packed runs one config; STEPS=N sets the measured steps.
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=("${@:-1}")
STEPS="${STEPS:-10}"

python3 -c "import torch, transformers, safetensors" 2>/dev/null || bench_pip torch==2.13.0 safetensors numpy transformers
swift build -c release --product dapt >/dev/null
DAPT="$(swift build -c release --show-bin-path)/dapt"

# lib.sh lifted any inherited OPENBLAS_CORETYPE: OpenBLAS picks its kernels for this CPU.
core="$(OPENBLAS_VERBOSE=2 "$DAPT" --help 2>&1 | grep -o 'Core: .*' | cut -c7- || echo unknown)"
echo "OpenBLAS core: $core (inherited OPENBLAS_CORETYPE: ${bench_pinned_coretype:-none}, lifted)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(date -u '+%Y-%m-%d %H:%M UTC')"
CONFIGS=(
  "small|--vocab 4096 --hidden 256 --layers 4 --heads 4 --intermediate 688 --seq 256 --batch 8"
  "medium|--vocab 8192 --hidden 512 --layers 8 --heads 8 --intermediate 1376 --seq 512 --batch 4"
  "long-packed|--vocab 4096 --hidden 256 --layers 4 --heads 4 --intermediate 688 --seq 4096 --batch 1 --doc-length 512"
)
printf "%-12s %3s %12s %12s %9s %9s %9s %10s %10s %9s  %s\n" config thr dapt_tok/s torch_tok/s ratio dapt_GF torch_GF dapt_MiB torch_MiB mem_ratio load
for t in "${THREADS[@]}"; do
  for entry in "${CONFIGS[@]}"; do
    name="${entry%%|*}"; args="${entry#*|}"
    if [ -n "${ONLY:-}" ] && [ "$ONLY" != "$name" ]; then continue; fi
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    # The small config also reports its time inside sgemm against plain
    # sgemm on the same products, replayed after each step (--breakdown).
    extra=(); [ "$name" = small ] && extra=(--breakdown)
    d="$(OPENBLAS_NUM_THREADS=$t "$DAPT" bench train-step $args --threads "$t" --steps "$STEPS" "${extra[@]}")"
    p="$(OMP_NUM_THREADS=$t python3 scripts/bench/train_step_torch.py $args --threads "$t" --steps "$STEPS")"
    python3 - "$name" "$t" "$load" "$d" "$p" <<'PY'
import json, sys
name, t, load, d, p = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), json.loads(sys.argv[5])
print(f"{name:<12} {t:>3} {d['tokens_per_s']:>12.1f} {p['tokens_per_s']:>12.1f} {d['tokens_per_s']/p['tokens_per_s']:>8.2f}x "
      f"{d['gflops']:>9.1f} {p['gflops']:>9.1f} {d['peak_rss_mb']:>10.0f} {p['peak_rss_mb']:>10.0f} {d['peak_rss_mb']/p['peak_rss_mb']:>8.2f}x  {load}"
      f"   (loss dapt {d['loss']:.4f} torch {p['loss']:.4f})")
b = d.get("breakdown")
if b:
    print(f"{'':<12} dapt step: {b['outside_sgemm_share']*100:.1f}% outside sgemm; {b['step_sgemm_gflops']:.1f} GF/s over its "
          f"{b['sgemm_calls']} products against plain sgemm on the same shapes {b['plain_sgemm_gflops']:.1f} GF/s cached "
          f"({b['step_vs_plain_sgemm']:.2f}x), {b['cold_sgemm_gflops']:.1f} GF/s cold ({b['step_vs_cold_sgemm']:.2f}x)")
    print(f"{'':<12} goals: outside sgemm {b['outside_sgemm_share']*100:.1f}% (< 10%), the step (its products' flops over its whole time) {b['step_vs_plain_sgemm']:.2f}x "
          f"the same-run sgemm rate (>= 0.90x)")
    print(f"{'':<12} exponential kernels: {d['kernel_lanes']} lanes")
    for s in d.get("slowest_shapes", [])[:5]:
        print(f"{'':<12}   {s['shape']:<20} {s['calls']:>5} calls  step {s['step_s']*1e3:8.2f} ms  replay {s['plain_s']*1e3:8.2f} ms  "
              f"({s['plain_s']/s['step_s']:.2f}x)")
PY
  done
done

# Where the CPU has AVX-512, dapt runs its exponential kernels (SwiGLU, softmax
# rows, the loss's and attention's sums) at sixteen lanes: the small config
# once more at eight (DAPT_KERNEL_LANES=8),
# then at sixteen, for the ratio (the two give the same loss, bit for bit).
lanes="$(OPENBLAS_NUM_THREADS=1 "$DAPT" bench train-step --vocab 64 --hidden 32 --layers 1 --heads 1 --seq 8 --batch 1 --steps 1 --warmup 0 |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["kernel_lanes"])')"
if [ "$lanes" != 8 ] && [ "${ONLY:-small}" = small ]; then
  echo "exponential kernels, small config, ${THREADS[0]} thread(s): eight lanes, then $lanes"
  small="${CONFIGS[0]#*|}"
  for l in 8 ""; do
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    DAPT_KERNEL_LANES=$l OPENBLAS_NUM_THREADS=${THREADS[0]} "$DAPT" bench train-step $small --threads "${THREADS[0]}" --steps "$STEPS" --breakdown |
      python3 -c "import json,sys; d=json.load(sys.stdin); b=d['breakdown']; print(f\"  {d['kernel_lanes']:>2} lanes: {d['tokens_per_s']:8.1f} tokens/s, {b['outside_sgemm_share']*100:.1f}% outside sgemm, loss {d['loss']:.9g}  ({sys.argv[1]})\")" "$load"
  done
fi

# dapt alone: memory against context length (batch 1, packed 1024-token
# documents): tiled attention keeps per-head state O(T), so peak RSS grows
# linearly with T, as the activations do.
echo "dapt context scaling (batch 1, documents of 1024 tokens, ${THREADS[0]} thread(s)):"
printf "%-8s %12s %9s %10s  %s\n" seq tok/s GF/s peak_MiB load
for seq in 2048 4096 8192; do
  load="$(cut -d' ' -f1-3 /proc/loadavg)"
  d="$(OPENBLAS_NUM_THREADS=${THREADS[0]} "$DAPT" bench train-step --vocab 4096 --hidden 256 --layers 4 --heads 4 --intermediate 688 \
        --seq "$seq" --batch 1 --doc-length 1024 --threads "${THREADS[0]}" --steps 3 --warmup 1)"
  python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(f\"{sys.argv[2]:<8} {d['tokens_per_s']:>12.1f} {d['gflops']:>9.1f} {d['peak_rss_mb']:>10.0f}  {sys.argv[3]}\")" "$d" "$seq" "$load"
done
