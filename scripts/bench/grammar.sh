#!/usr/bin/env bash
# Constrained-decoding benchmark: dapt's JSON grammar masks against xgrammar
# on the same tokenizer.json, JSON Schema and output text, in one run:
#   - schema compile time,
#   - mask time per token over a fixed valid output, token by token (the
#     first pass starts with empty caches; the later pass is a new sequence
#     reusing the compiled grammar / mask cache),
#   - dapt's mask time against one token through the tiny model (its
#     forward at sequence length 1, one thread: a lower bound of a decoding step).
# Two vocabularies: the sample tokenizer (out/sample/tokenizer.json from
# scripts/run-sample.sh if present, else one trained by `dapt tokenizer train`
# on data/corpus, vocab 2048, as the tiny model's) and a larger byte-level BPE trained with
# `tokenizers` on data/corpus + data/sample (VOCAB, default 32000; fewer if the
# text runs out of merges — the figure printed is the real size).
# usage: scripts/bench/grammar.sh   (env: VOCAB=32000 DAPT=path/to/dapt to skip the release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
VOCAB="${VOCAB:-32000}"
python3 -m pip install -q tokenizers xgrammar==0.2.9 2>&1 | grep -v -i "warning" || true
export OPENBLAS_NUM_THREADS=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -z "${DAPT:-}" ]; then
  swift build -c release --product dapt >/dev/null
  DAPT="$(swift build -c release --show-bin-path)/dapt"
fi
schema=scripts/bench/grammar_schema.json
text=scripts/bench/grammar_output.json

echo "== grammar benchmark: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "load: $(uptime | sed 's/.*load average/load average/')"
echo "schema: $schema; output: $text ($(wc -c < "$text") bytes); dapt: $DAPT"

small=out/sample/tokenizer.json
if [ ! -f "$small" ]; then
  small="$work/sample.json"
  "$DAPT" tokenizer train --input data/corpus/patents.jsonl --vocab-size 2048 --output "$small" >/dev/null
fi
python3 scripts/bench/grammar_peer.py train data/corpus/patents.jsonl data/sample/patents.jsonl --vocab-size "$VOCAB" --output "$work/large.json"

ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
field() { python3 -c "import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
for tok in "$small" "$work/large.json"; do
  for mode in schema any; do
    args=(); [ "$mode" = schema ] && args=(--schema "$schema")
    peer=$(python3 scripts/bench/grammar_peer.py run --tokenizer "$tok" "${args[@]}" --text "$text" --ids-out "$work/ids.json" --passes 3)
    dargs=(); [ "$mode" = schema ] && dargs=(--json-schema "$schema")
    mine=$("$DAPT" bench grammar --tokenizer "$tok" "${dargs[@]}" --ids "$work/ids.json" --passes 3)
    echo "-- vocab $(field "$mine" vocab), $mode ($(field "$mine" tokens) tokens)"
    echo "$peer"
    echo "$mine"
    echo "compile time dapt/xgrammar: $(ratio "$(field "$mine" compile_ms)" "$(field "$peer" compile_ms)")"
    echo "mask time per token dapt/xgrammar: first pass $(ratio "$(field "$mine" mask_us_first)" "$(field "$peer" mask_us_first)"), later pass $(ratio "$(field "$mine" mask_us_later)" "$(field "$peer" mask_us_later)")"
    echo "dapt mask (first pass) / tiny-model forward of one token: $(field "$mine" mask_over_forward)"
  done
done
