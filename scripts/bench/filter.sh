#!/usr/bin/env bash
# dapt filter: quality and speed.
# Quality: clean synthetic patent-like text with injected noise of known kinds
# (random bytes decoded as text, shuffled characters, mojibake, digit/table
# debris, repeated boilerplate); precision and recall of removal per kind and
# of clean text kept, under a small reference model pretrained here on a
# separate slice of the clean text.
# Speed: scored tokens/s of dapt filter against transformers (PyTorch CPU) on
# the same model, token windows (window 256, overlap 64), batch size and
# threads, two ways: dapt's whole run (read, tokenise, score, write) against
# the peer's tokenising and scoring, and scoring alone on both sides (dapt's
# summary line "scoring alone"); and dapt on 1 and 2 ranks. Both sides score
# the same tokens (checked); dapt packs several short windows into each of
# its BATCH rows, the peer pads BATCH windows.
# Usage: scripts/bench/filter.sh   (STEPS=300: the reference model's training steps; DAPT_BIN=path to use another build)
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
bench_pip torch==2.13.0 transformers==5.24.0 tokenizers safetensors
bench_dapt
bench_tmp filter
bench_header

bench_corpus "$tmp/corpus.jsonl" 3000 3
python3 scripts/bench/filter_noise.py make "$tmp/corpus.jsonl" "$tmp/ref.jsonl" "$tmp/eval.jsonl"
"$dapt" tokenizer train --input "$tmp/ref.jsonl" --vocab-size 2048 --output "$tmp/tokenizer.json" >/dev/null 2>&1
"$dapt" tokenizer encode --tokenizer "$tmp/tokenizer.json" --input "$tmp/ref.jsonl" --output "$tmp/tokens" >/dev/null 2>&1
OPENBLAS_NUM_THREADS=$(nproc) "$dapt" pretrain --config configs/pretrain-tiny.yaml --input "$tmp/tokens" --output "$tmp/ref" \
  --steps "${STEPS:-300}" --set eval.sequences=0 --set log_every_steps=1000 >/dev/null 2>&1
ref="$(ls -d "$tmp/ref"/checkpoint-* | tail -1)"  # transformers loads a checkpoint folder, not a run folder
echo "reference: configs/pretrain-tiny.yaml (1.3M parameters), ${STEPS:-300} steps on $(wc -l < "$tmp/ref.jsonl") clean records; scored: $(wc -l < "$tmp/eval.jsonl") other records"

window=256; batch=8
cuts=(--set high_quantile=0.8 --set low_quantile=0.04 --set window=$window --set batch_size=$batch --set buckets=3)
# An inherited OPENBLAS_CORETYPE (lifted by lib.sh) pins OpenBLAS's kernels
# (Haswell: AVX2 on a CPU with AVX-512, while PyTorch picks its kernels
# itself): dapt runs once under the pin, for the record, and then under
# OpenBLAS's own choice.
core() { OPENBLAS_VERBOSE=2 "$dapt" --help 2>&1 | grep -o 'Core: .*' | cut -c7- || echo unknown; }
if [ -n "$bench_pinned_coretype" ]; then
  OPENBLAS_CORETYPE="$bench_pinned_coretype" OPENBLAS_NUM_THREADS=1 "$dapt" filter --input "$tmp/eval.jsonl" --model "$ref" --output "$tmp/out1p" "${cuts[@]}" 2>/dev/null > "$tmp/dapt1p.txt"
  echo "1 thread, OpenBLAS pinned to $(OPENBLAS_CORETYPE="$bench_pinned_coretype" core) by OPENBLAS_CORETYPE=$bench_pinned_coretype: dapt scoring alone $(grep -o '([0-9]* scoring tokens/s)' "$tmp/dapt1p.txt" | tr -d '()')"
fi
echo "OpenBLAS core (its own choice): $(core)"
OPENBLAS_NUM_THREADS=1 "$dapt" filter --input "$tmp/eval.jsonl" --model "$ref" --output "$tmp/out1" "${cuts[@]}" 2>/dev/null | tee "$tmp/dapt1.txt"
python3 scripts/bench/filter_noise.py quality "$tmp/out1"

peer() { python3 scripts/bench/filter_noise.py peer "$ref" "$tmp/eval.jsonl" "$1" $batch $window 2> "$tmp/peer.err" || { cat "$tmp/peer.err" >&2; exit 1; }; }
whole() { grep -o '([0-9]* tokens/s)' "$1" | tr -d '(' | awk '{print $1}'; }
alone() { grep -o '([0-9]* scoring tokens/s)' "$1" | tr -d '(' | awk '{print $1}'; }
tokens() { grep -o '[0-9]* tokens scored' "$1" | awk '{print $1}'; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
compare() {  # threads, dapt's output
  read -r pt pw ps <<< "$(peer "$1")"
  [ "$pt" = "$(tokens "$2")" ] || { echo "token counts differ: dapt $(tokens "$2"), transformers $pt" >&2; exit 1; }
  echo "$1 thread(s), $pt tokens scored by both:"
  echo "  whole run:     dapt $(whole "$2") tokens/s, transformers $pw tokens/s (tokenise + score), ratio $(ratio "$(whole "$2")" "$pw")"
  echo "  scoring alone: dapt $(alone "$2") tokens/s, transformers $ps tokens/s, ratio $(ratio "$(alone "$2")" "$ps")"
}
compare 1 "$tmp/dapt1.txt"
OPENBLAS_NUM_THREADS=2 "$dapt" filter --input "$tmp/eval.jsonl" --model "$ref" --output "$tmp/out2t" "${cuts[@]}" 2>/dev/null > "$tmp/dapt2t.txt"
compare 2 "$tmp/dapt2t.txt"
mpi=(-np 2 --oversubscribe -x OPENBLAS_NUM_THREADS=1); [ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
mpirun "${mpi[@]}" "$dapt" filter --input "$tmp/eval.jsonl" --model "$ref" --output "$tmp/out2r" "${cuts[@]}" 2>/dev/null > "$tmp/dapt2r.txt"
cmp -s "$tmp/out1/kept.jsonl" "$tmp/out2r/kept.jsonl" && same=identical || same=DIFFERENT
echo "dapt 2 ranks x 1 thread: whole run $(whole "$tmp/dapt2r.txt") tokens/s (speed-up $(ratio "$(whole "$tmp/dapt2r.txt")" "$(whole "$tmp/dapt1.txt")") over 1 rank), scoring alone $(alone "$tmp/dapt2r.txt") tokens/s (speed-up $(ratio "$(alone "$tmp/dapt2r.txt")" "$(alone "$tmp/dapt1.txt")")); kept.jsonl $same to 1 rank's"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
