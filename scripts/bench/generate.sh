#!/usr/bin/env bash
# KV-cache greedy generation: prefill and decode tokens/s of `dapt bench generate`
# against transformers' `generate` (scripts/bench/generate_peer.py) on the same
# model (the pretrain-tiny shape, random weights, saved by transformers), the same
# synthetic prompts and the same thread count; ratios dapt / transformers, and the
# time of one decoding step (step_ms = decode time / new tokens, for the whole batch).
# Usage: scripts/bench/generate.sh [THREADS]   (default 1); REPEATS=N (default 3).
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS="${1:-1}"
REPEATS="${REPEATS:-3}"
python3 -c "import torch, transformers, safetensors" 2>/dev/null || bench_pip torch==2.13.0 safetensors numpy transformers
swift build -c release --product dapt >/dev/null
DAPT="$(swift build -c release --show-bin-path)/dapt"
MODEL="$(mktemp -d)/tiny"
trap 'rm -rf "$(dirname "$MODEL")"' EXIT
python3 scripts/bench/generate_peer.py --make-model "$MODEL"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(date -u '+%Y-%m-%d %H:%M UTC'); $THREADS thread(s)"
printf "%-16s %12s %12s %7s %12s %12s %7s %9s %9s  %s\n" case dapt_pre/s hf_pre/s ratio dapt_dec/s hf_dec/s ratio dapt_ms hf_ms load
for entry in "b1-p64-n64|--batch 1 --prompt-length 64 --new-tokens 64" \
             "b8-p64-n64|--batch 8 --prompt-length 64 --new-tokens 64" \
             "b1-p512-n32|--batch 1 --prompt-length 512 --new-tokens 32"; do
  name="${entry%%|*}"; args="${entry#*|}"
  load="$(cut -d' ' -f1-3 /proc/loadavg)"
  d="$(OPENBLAS_NUM_THREADS=$THREADS "$DAPT" bench generate --model "$MODEL" $args --repeats "$REPEATS")"
  p="$(OMP_NUM_THREADS=$THREADS python3 scripts/bench/generate_peer.py --model "$MODEL" $args --repeats "$REPEATS" --threads "$THREADS")"
  python3 - "$name" "$load" "$d" "$p" <<'PY'
import json, sys
name, load, d, p = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
print(f"{name:<16} {d['prefill_tokens_per_s']:>12.0f} {p['prefill_tokens_per_s']:>12.0f} {d['prefill_tokens_per_s']/p['prefill_tokens_per_s']:>6.2f}x "
      f"{d['decode_tokens_per_s']:>12.0f} {p['decode_tokens_per_s']:>12.0f} {d['decode_tokens_per_s']/p['decode_tokens_per_s']:>6.2f}x "
      f"{d['step_ms']:>9.3f} {p['step_ms']:>9.3f}  {load}")
PY
done
