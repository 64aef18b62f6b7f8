#!/usr/bin/env bash
# dapt filter: quality and speed.
# Quality: clean synthetic patent-like text with injected noise of known kinds
# (random bytes decoded as text, shuffled characters, mojibake, digit/table
# debris, repeated boilerplate); precision and recall of removal per kind and
# of clean text kept, under a small reference model pretrained here on a
# separate slice of the clean text.
# Speed: scoring tokens/s of dapt filter (whole run: read, tokenise, score,
# write) against transformers (PyTorch CPU: tokenise and score only) on the
# same model, records, batch size and threads; and dapt on 1 and 2 ranks.
# Usage: scripts/bench/filter.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "torch==2.13.0" > /tmp/dapt-bench-constraints.txt
python3 -m pip install -q -c /tmp/dapt-bench-constraints.txt torch==2.13.0 transformers==5.24.0 tokenizers safetensors jieba 2>&1 | grep -v -i "warning" || true
swift build -c release --product dapt >/dev/null
dapt="$(swift build -c release --show-bin-path)/dapt"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
echo "machine: $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"

python3 scripts/fixtures/tokenizer_corpus.py "$tmp/corpus.jsonl" --records 3000 --seed 3 >/dev/null
python3 scripts/bench/filter_noise.py make "$tmp/corpus.jsonl" "$tmp/ref.jsonl" "$tmp/eval.jsonl"
"$dapt" tokenizer train --input "$tmp/ref.jsonl" --vocab-size 2048 --output "$tmp/tokenizer.json" >/dev/null 2>&1
"$dapt" tokenizer encode --tokenizer "$tmp/tokenizer.json" --input "$tmp/ref.jsonl" --output "$tmp/tokens" >/dev/null 2>&1
OPENBLAS_NUM_THREADS=$(nproc) "$dapt" pretrain --config configs/pretrain-tiny.yaml --input "$tmp/tokens" --output "$tmp/ref" \
  --steps 300 --set eval.sequences=0 --set log_every_steps=1000 >/dev/null 2>&1
ref="$(ls -d "$tmp/ref"/checkpoint-* | tail -1)"  # transformers loads a checkpoint folder, not a run folder
echo "reference: configs/pretrain-tiny.yaml (1.3M parameters), 300 steps on $(wc -l < "$tmp/ref.jsonl") clean records; scored: $(wc -l < "$tmp/eval.jsonl") other records"

window=256; batch=8
cuts=(--set high_quantile=0.8 --set low_quantile=0.04 --set window=$window --set batch_size=$batch --set buckets=3)
OPENBLAS_NUM_THREADS=1 "$dapt" filter --input "$tmp/eval.jsonl" --model "$ref" --output "$tmp/out1" "${cuts[@]}" 2>/dev/null | tee "$tmp/dapt1.txt"
python3 scripts/bench/filter_noise.py quality "$tmp/out1"

peer() { python3 scripts/bench/filter_noise.py peer "$ref" "$tmp/eval.jsonl" "$1" $batch $window 2> "$tmp/peer.err" || { cat "$tmp/peer.err" >&2; exit 1; }; }
rate() { grep -o '([0-9]* tokens/s)' "$1" | tr -d '(' | awk '{print $1}'; }
d1=$(rate "$tmp/dapt1.txt")
read -r p1 _ _ <<< "$(peer 1)"
printf "scoring, 1 thread: dapt %s tokens/s, transformers %s tokens/s, ratio %.2f\n" "$d1" "$p1" "$(python3 -c "print($d1/$p1)")"
OPENBLAS_NUM_THREADS=2 "$dapt" filter --input "$tmp/eval.jsonl" --model "$ref" --output "$tmp/out2t" "${cuts[@]}" 2>/dev/null > "$tmp/dapt2t.txt"
read -r p2 _ _ <<< "$(peer 2)"
d2t=$(rate "$tmp/dapt2t.txt")
printf "scoring, 2 threads: dapt %s tokens/s, transformers %s tokens/s, ratio %.2f\n" "$d2t" "$p2" "$(python3 -c "print($d2t/$p2)")"
mpi=(-np 2 --oversubscribe -x OPENBLAS_NUM_THREADS=1); [ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
mpirun "${mpi[@]}" "$dapt" filter --input "$tmp/eval.jsonl" --model "$ref" --output "$tmp/out2r" "${cuts[@]}" 2>/dev/null > "$tmp/dapt2r.txt"
d2r=$(rate "$tmp/dapt2r.txt")
cmp -s "$tmp/out1/kept.jsonl" "$tmp/out2r/kept.jsonl" && same=identical || same=DIFFERENT
printf "dapt 2 ranks x 1 thread: %s tokens/s, speed-up %.2f over 1 rank; kept.jsonl %s to 1 rank's\n" "$d2r" "$(python3 -c "print($d2r/$d1)")" "$same"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
