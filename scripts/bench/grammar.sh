#!/usr/bin/env bash
# Constrained-decoding benchmark: dapt's JSON grammar masks against xgrammar
# on the same tokenizer.json, JSON Schema and output text, in one run:
#   - compile time (dapt: the grammar and the top-frame masks it precomputes;
#     xgrammar: compile_json_schema / the builtin JSON grammar),
#   - mask time per token over a fixed valid output, token by token (the
#     first pass starts with what the compile left; the later pass is a new
#     sequence reusing the compiled grammar / mask cache),
#   - compile plus every mask of the first sequence: what a schema used once costs,
#   - dapt without precomputation (--precompute-limit 0) beside it,
#   - dapt's mask time against one token through the tiny model (its
#     forward at sequence length 1, one thread: a lower bound of a decoding step).
# Two vocabularies: the sample tokenizer (out/sample/tokenizer.json from
# scripts/run-sample.sh if present, else one trained by `dapt tokenizer train`
# on data/corpus, vocab 2048, as the tiny model's) and a larger byte-level BPE trained with
# `tokenizers` on data/corpus + data/sample (VOCAB, default 32000; fewer if the
# text runs out of merges — the figure printed is the real size).
# usage: scripts/bench/grammar.sh   (env: VOCAB=32000 DAPT=path/to/dapt to skip the release build)
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
VOCAB="${VOCAB:-32000}"
bench_pip tokenizers xgrammar==0.2.9
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

for tok in "$small" "$work/large.json"; do
  for mode in schema any; do
    args=(); [ "$mode" = schema ] && args=(--schema "$schema")
    peer=$(python3 scripts/bench/grammar_peer.py run --tokenizer "$tok" "${args[@]}" --text "$text" --ids-out "$work/ids.json" --passes 3)
    dargs=(); [ "$mode" = schema ] && dargs=(--json-schema "$schema")
    mine=$("$DAPT" bench grammar --tokenizer "$tok" "${dargs[@]}" --ids "$work/ids.json" --passes 3)
    lazy=$("$DAPT" bench grammar --tokenizer "$tok" "${dargs[@]}" --ids "$work/ids.json" --passes 3 --precompute-limit 0)
    echo "-- $mode, load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$peer"
    echo "$mine"
    echo "$lazy"
    python3 - "$mode" "$peer" "$mine" "$lazy" <<'PY'
import json, sys
mode, peer, mine, lazy = sys.argv[1], *(json.loads(a) for a in sys.argv[2:])
r = lambda a, b: f"{a / b:.2f}x"
print(f"vocab {mine['vocab']}, {mode}, {mine['tokens']} tokens: dapt (precomputed {mine['precomputed_top_frames']} top frames) / xgrammar")
print(f"  compile            {mine['compile_ms']:9.3f} / {peer['compile_ms']:9.3f} ms   {r(mine['compile_ms'], peer['compile_ms'])}")
print(f"  mask, first pass   {mine['mask_us_first']:9.2f} / {peer['mask_us_first']:9.2f} us   {r(mine['mask_us_first'], peer['mask_us_first'])}")
print(f"  mask, later pass   {mine['mask_us_later']:9.2f} / {peer['mask_us_later']:9.2f} us   {r(mine['mask_us_later'], peer['mask_us_later'])}")
print(f"  compile + first    {mine['first_total_ms']:9.3f} / {peer['first_total_ms']:9.3f} ms   {r(mine['first_total_ms'], peer['first_total_ms'])}")
print(f"  lazy dapt (no precomputation): compile {lazy['compile_ms']:.3f} ms, first pass {lazy['mask_us_first']:.2f} us, compile + first {lazy['first_total_ms']:.3f} ms ({r(lazy['first_total_ms'], peer['first_total_ms'])} xgrammar)")
print(f"  dapt mask (first pass) / tiny-model forward of one token: {mine['mask_over_forward']:.4f} (forward {mine['forward_us']:.1f} us)")
PY
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
