#!/usr/bin/env bash
# Tokenizer benchmark: dapt against Hugging Face `tokenizers` on the same
# corpus and vocabulary size, in one run:
#   - training time, one thread each (wall and CPU time of the whole command),
#   - encode throughput, one thread each, on dapt's tokenizer.json in both
#     (ids compared on the whole corpus: the reverse parity check),
#   - encode with one rank / one thread per core (mpirun vs encode_batch),
#   - tokens per character by language for both trained tokenizers.
# CPU-time figures are given beside wall time because the 2 cores are shared.
# usage: scripts/bench/tokenizer.sh [CORPUS.jsonl]   (env: VOCAB=16000 RECORDS=20000)
# BASELINE=/path/to/other/dapt also times that binary (say, a release build of
# main) on the same training and one-thread encode, to compare two versions.
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
VOCAB="${VOCAB:-16000}"
RECORDS="${RECORDS:-20000}"
bench_pip tokenizers
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OPENBLAS_NUM_THREADS=1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
corpus="${1:-}"
if [ -z "$corpus" ]; then
  corpus="$work/corpus.jsonl"
  bench_corpus "$corpus" "$RECORDS" 2026
fi
swift build -c release --product dapt >/dev/null
dapt="$(swift build -c release --show-bin-path)/dapt"
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
mbps() { echo "$1" | sed -E 's/.*: ([0-9.]+) MB\/s \(.*/\1/'; }
cpumbps() { echo "$1" | sed -E 's/.*: ([0-9.]+) MB\/s per CPU second.*/\1/'; }
TIMEFORMAT='%R %U %S'

echo "== tokenizer benchmark: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "load: $(uptime | sed 's/.*load average/load average/')"
echo "corpus: $corpus ($(wc -l < "$corpus") records, $(du -m "$corpus" | cut -f1) MB), vocab $VOCAB"

echo "-- training, one thread each (whole command: read JSONL, count, merge, write tokenizer.json)"
{ time "$dapt" tokenizer train --input "$corpus" --output "$work/dapt.json" --vocab-size "$VOCAB" 2>/dev/null | sed 's/^/dapt: /' ; } 2> "$work/t-dapt"
{ time RAYON_NUM_THREADS=1 python3 scripts/bench/tokenizer_peer.py train "$corpus" "$VOCAB" "$work/hf.json" ; } 2> "$work/t-hf"
read -r dr du ds < "$work/t-dapt"; read -r hr hu hs < "$work/t-hf"
dc=$(python3 -c "print($du + $ds)"); hc=$(python3 -c "print($hu + $hs)")
echo "train: dapt ${dr} s wall, ${dc} s CPU; tokenizers ${hr} s wall, ${hc} s CPU"
echo "train time ratio dapt/tokenizers: wall $(ratio "$dr" "$hr"), CPU $(ratio "$dc" "$hc")"
if [ -n "${BASELINE:-}" ]; then
  { time "$BASELINE" tokenizer train --input "$corpus" --output "$work/base.json" --vocab-size "$VOCAB" >/dev/null 2>&1 ; } 2> "$work/t-base"
  read -r br bu bs < "$work/t-base"; bc=$(python3 -c "print($bu + $bs)")
  echo "train: baseline ${br} s wall, ${bc} s CPU; dapt/baseline time: wall $(ratio "$dr" "$br"), CPU $(ratio "$dc" "$bc")"
  cmp -s "$work/dapt.json" "$work/base.json" && echo "baseline: tokenizer.json byte-identical" || echo "baseline: tokenizer.json DIFFERS"
fi
python3 - "$work/dapt.json" "$work/hf.json" <<'PY'
import json, sys
d, h = (json.load(open(p))["model"] for p in sys.argv[1:3])
merges = lambda m: [x if isinstance(x, str) else " ".join(x) for x in m["merges"]]
print("trained vocabularies and merges identical:", d["vocab"] == h["vocab"] and merges(d) == merges(h))
PY

echo "-- encode, one thread (both run dapt's tokenizer.json; ids compared)"
dapt_line=$("$dapt" tokenizer tokenize --tokenizer "$work/dapt.json" --input "$corpus" --output "$work/dapt-ids.txt")
echo "dapt: $dapt_line"
hf_out=$(RAYON_NUM_THREADS=1 python3 scripts/bench/tokenizer_peer.py encode "$work/dapt.json" "$corpus" --ids "$work/dapt-ids.txt")
echo "$hf_out"
hf_line=$(echo "$hf_out" | head -1)
echo "encode speed ratio dapt/tokenizers, one thread: wall $(ratio "$(mbps "$dapt_line")" "$(mbps "$hf_line")"), CPU $(ratio "$(cpumbps "$dapt_line")" "$(cpumbps "$hf_line")")"
if [ -n "${BASELINE:-}" ]; then
  base_line=$("$BASELINE" tokenizer tokenize --tokenizer "$work/dapt.json" --input "$corpus" --output "$work/base-ids.txt")
  echo "baseline: $base_line"
  echo "encode speed ratio dapt/baseline, one thread: wall $(ratio "$(mbps "$dapt_line")" "$(mbps "$base_line")"), CPU $(ratio "$(cpumbps "$dapt_line")" "$(cpumbps "$base_line")")"
  cmp -s "$work/dapt-ids.txt" "$work/base-ids.txt" && echo "baseline: ids identical" || echo "baseline: ids DIFFER"
fi

echo "-- encode, one thread, GPT-2 ByteLevel form (tokenizers' built-in regex; dapt-trained with --pre-tokenizer gpt2)"
"$dapt" tokenizer train --input "$corpus" --output "$work/dapt-gpt2.json" --vocab-size "$VOCAB" --pre-tokenizer gpt2 >/dev/null 2>&1
dapt_line=$("$dapt" tokenizer tokenize --tokenizer "$work/dapt-gpt2.json" --input "$corpus" --output "$work/dapt-gpt2-ids.txt")
echo "dapt: $dapt_line"
hf_out=$(RAYON_NUM_THREADS=1 python3 scripts/bench/tokenizer_peer.py encode "$work/dapt-gpt2.json" "$corpus" --ids "$work/dapt-gpt2-ids.txt")
echo "$hf_out"
hf_line=$(echo "$hf_out" | head -1)
echo "encode speed ratio dapt/tokenizers, one thread, GPT-2 form: wall $(ratio "$(mbps "$dapt_line")" "$(mbps "$hf_line")"), CPU $(ratio "$(cpumbps "$dapt_line")" "$(cpumbps "$hf_line")")"

n=$(nproc)
echo "-- encode, one rank / thread per core ($n)"
{ time mpirun -np "$n" --oversubscribe --mca btl self,vader,tcp "$dapt" tokenizer encode --tokenizer "$work/dapt.json" \
    --input "$corpus" --output "$work/shards" --shard-lines 1000 2>/dev/null | sed 's/^/dapt: /' ; } 2> "$work/t-mp"
read -r mr mu ms < "$work/t-mp"
mb=$(python3 -c "import os; print(os.path.getsize('$corpus') / 1e6)")
echo "dapt: mpirun -np $n end to end (start, read JSONL, encode, write shards): ${mr} s wall: $(ratio "$mb" "$mr") MB/s of JSONL"
hf_mp=$(RAYON_NUM_THREADS=$n python3 scripts/bench/tokenizer_peer.py encode "$work/dapt.json" "$corpus")
echo "$hf_mp"
echo "encode $n-way ratio dapt (end to end, JSONL MB) / tokenizers encode_batch (encode only, text MB): $(ratio "$(ratio "$mb" "$mr")" "$(mbps "$hf_mp")")"
"$dapt" tokenizer verify --input "$work/shards" | sed 's/^/dapt: /'

echo "-- tokens per character (each side's trained tokenizer on the whole corpus)"
python3 scripts/bench/tokenizer_peer.py ratio "$corpus" "$work/dapt.json" "$work/hf.json"
echo "load after: $(uptime | sed 's/.*load average/load average/')"
