#!/usr/bin/env bash
# dapt eval mc against lm-evaluation-harness' log-likelihood scoring
# (HFLM.loglikelihood, scripts/bench/eval_mc_peer.py) on the same model, items
# and prompts: accuracy of each, per-item agreement of the picks, the largest
# log-likelihood difference, and the time ratio (whole runs: dapt's process
# against the peer's loading + scoring; and scoring alone on both sides).
# Usage: scripts/bench/eval-mc.sh MODEL_DIR [INPUT_DIR] [SHOTS]
#   MODEL_DIR: a dapt checkpoint or Hugging Face Llama directory with tokenizer.json
#   (e.g. out/sample/pretrain/checkpoint-00000150 after scripts/run-sample.sh);
#   INPUT_DIR default data/eval/mc/mmlu; SHOTS default 0.
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
model="${1:?usage: scripts/bench/eval-mc.sh MODEL_DIR [INPUT_DIR] [SHOTS]}"
input="${2:-data/eval/mc/mmlu}"
shots="${3:-0}"
bench_tmp eval-mc
# lm-eval in a virtual environment that sees the installed torch/transformers.
venv="${MC_VENV:-/tmp/dapt-bench-lmeval}"
[ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"
"$venv/bin/python" -c "import lm_eval" 2>/dev/null || "$venv/bin/pip" install -q lm-eval
# DAPT_BIN: a dapt binary to use instead of building the release one.
bench_dapt
bench_header
echo "dapt: $dapt"
echo "model: $model; items: $input; shots: $shots; lm-eval $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("lm_eval"))'), 1 thread each"

start=$(date +%s.%N)
OPENBLAS_NUM_THREADS=1 "$dapt" eval mc --model "$model" --input "$input" --shots "$shots" --output "$tmp/dapt" >"$tmp/dapt.out"
dapt_seconds=$(echo "$(date +%s.%N) - $start" | bc)
cat "$tmp/dapt.out"
PEER_THREADS=1 "$venv/bin/python" scripts/bench/eval_mc_peer.py "$model" "$input" "$shots" "$tmp/peer.jsonl" 2>/dev/null | tail -1 >"$tmp/peer.json"

dapt_scoring=$(sed -n 's/^scored [0-9]* items in \([0-9.]*\) s.*/\1/p' "$tmp/dapt.out")
python3 - "$tmp/dapt/mc.items.jsonl" "$tmp/peer.jsonl" "$tmp/peer.json" "$dapt_seconds" "$dapt_scoring" <<'EOF'
import json, sys
dapt = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
peer = [json.loads(l) for l in open(sys.argv[2], encoding="utf-8")]
summary = json.load(open(sys.argv[3]))
assert len(dapt) == len(peer), (len(dapt), len(peer))
agree = sum(d["pick"] == p["pick"] for d, p in zip(dapt, peer))
diff = max(abs(a - b) for d, p in zip(dapt, peer) for a, b in zip(d["loglikelihoods"], p["loglikelihoods"]))
acc = lambda rows: sum(r["pick"] == r["answer"] for r in rows) / len(rows)
dapt_seconds, dapt_scoring = float(sys.argv[4]), float(sys.argv[5])
print(f"accuracy: dapt {acc(dapt):.4f}, lm-eval {acc(peer):.4f} ({len(dapt)} items)")
print(f"picks agree on {agree}/{len(dapt)} items; largest log-likelihood difference {diff:.2e}")
print(f"time, whole runs: dapt {dapt_seconds:.2f} s (process), lm-eval {summary['seconds']:.2f} s (imports, loading, scoring): "
      f"lm-eval/dapt {summary['seconds'] / dapt_seconds:.2f}x")
print(f"time, scoring alone (encoding and forward passes): dapt {dapt_scoring:.3f} s, lm-eval {summary['scoring_seconds']:.3f} s: "
      f"lm-eval/dapt {summary['scoring_seconds'] / dapt_scoring:.2f}x")
EOF
