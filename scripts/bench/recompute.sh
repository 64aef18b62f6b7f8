#!/usr/bin/env bash
# Activation recomputation: what it costs in speed and saves in memory, dapt
# (`pretrain.parallel.recompute`, here `dapt bench train-step --recompute`)
# against PyTorch (transformers LlamaForCausalLM, fp32, SDPA attention, with
# and without gradient checkpointing of every decoder layer) on the same
# model, batch and thread count; also of only the first half of the layers
# (`recompute_layers`; PyTorch: checkpointing only those layers), and dapt
# recomputing only every layer's [gate | up] rows (`recompute_granularity: mlp`,
# which has no switch in transformers). This machine's speed drifts by tens
# of percent between runs, so dapt's speed cost is also taken paired: the
# recomputing model and one without take steps in turn in one process
# (`--paired`), and the median of their step-by-step ratios is printed. Forward + backward, median of STEPS steps
# after one warm-up; peak RSS of each process (weights, gradients and
# activations; no optimizer state in either).
# Usage: scripts/bench/recompute.sh [THREADS]   (default 1; STEPS=N, default 5)
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
T="${1:-1}"
STEPS="${STEPS:-5}"

python3 -c "import torch, transformers" 2>/dev/null || bench_pip torch==2.13.0 numpy transformers
swift build -c release --product dapt >/dev/null
DAPT="${DAPT_BIN:-$(swift build -c release --show-bin-path)/dapt}"
bench_header
CONFIGS=(
  "medium|--vocab 8192 --hidden 512 --layers 8 --heads 8 --intermediate 1376 --seq 512 --batch 4"
  "long|--vocab 4096 --hidden 256 --layers 8 --heads 4 --intermediate 688 --seq 8192 --batch 1 --doc-length 1024"
)
printf "%-7s %-50s %10s %8s %9s  %s\n" config run tokens/s GF/s peak_MiB load
for entry in "${CONFIGS[@]}"; do
  name="${entry%%|*}"; args="${entry#*|}"
  results=()
  half=$(( $(sed -E 's/.*--layers ([0-9]+).*/\1/' <<<"$args") / 2 ))
  for run in "dapt" "dapt --recompute --recompute-layers $half" "dapt --recompute" "dapt --recompute --recompute-granularity mlp" \
             "torch" "torch --checkpointing 1 --checkpointing-layers $half" "torch --checkpointing 1"; do
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    case "$run" in
      dapt*) r="$(OPENBLAS_NUM_THREADS=$T "$DAPT" bench train-step $args ${run#dapt} --threads "$T" --steps "$STEPS" --warmup 1)" ;;
      torch*) r="$(OMP_NUM_THREADS=$T python3 scripts/bench/train_step_torch.py $args ${run#torch} --threads "$T" --steps "$STEPS" --warmup 1)" ;;
    esac
    results+=("$r")
    python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(f\"{sys.argv[2]:<7} {sys.argv[3]:<50} {d['tokens_per_s']:>10.1f} {d['gflops']:>8.1f} {d['peak_rss_mb']:>9.0f}  {sys.argv[4]}   (loss {d['loss']:.5f})\")" \
      "$r" "$name" "$run" "$load"
  done
  python3 - "$name" "${results[@]}" <<'PY'
import json, sys
name = sys.argv[1]
dapt, dapt_half, dapt_rc, dapt_mlp, torch, torch_half, torch_rc = (json.loads(x) for x in sys.argv[2:9])
print(f"{name:<7} half the layers: dapt {dapt_half['tokens_per_s'] / dapt['tokens_per_s']:.2f}x its speed, "
      f"{dapt_half['peak_rss_mb'] / dapt['peak_rss_mb']:.2f}x its peak RSS; "
      f"PyTorch {torch_half['tokens_per_s'] / torch['tokens_per_s']:.2f}x, {torch_half['peak_rss_mb'] / torch['peak_rss_mb']:.2f}x")
print(f"{name:<7} recomputing: dapt {dapt_rc['tokens_per_s'] / dapt['tokens_per_s']:.2f}x its speed, "
      f"{dapt_rc['peak_rss_mb'] / dapt['peak_rss_mb']:.2f}x its peak RSS; "
      f"PyTorch {torch_rc['tokens_per_s'] / torch['tokens_per_s']:.2f}x, {torch_rc['peak_rss_mb'] / torch['peak_rss_mb']:.2f}x; "
      f"dapt recomputing {dapt_rc['tokens_per_s'] / torch_rc['tokens_per_s']:.2f}x PyTorch checkpointing's tokens/s, "
      f"{dapt_rc['peak_rss_mb'] / torch_rc['peak_rss_mb']:.2f}x its peak RSS")
print(f"{name:<7} [gate | up] rows only: dapt {dapt_mlp['tokens_per_s'] / dapt['tokens_per_s']:.2f}x its speed, "
      f"{dapt_mlp['peak_rss_mb'] / dapt['peak_rss_mb']:.2f}x its peak RSS")
PY
  for run in "--recompute --recompute-layers $half" "--recompute" "--recompute --recompute-granularity mlp"; do
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    OPENBLAS_NUM_THREADS=$T "$DAPT" bench train-step $args $run --paired --threads "$T" --steps "$STEPS" --warmup 1 |
      python3 -c "import json,sys; p=json.load(sys.stdin)['paired']; print(f\"{sys.argv[1]:<7} paired, dapt {sys.argv[2]:<40} {p['speed_ratio']:.2f}x the speed without ({p['speed_ratio_min']:.2f}-{p['speed_ratio_max']:.2f} over the steps)  {sys.argv[3]}\")" \
      "$name" "$run" "$load"
  done
done
