# Shared pieces of the benchmark scripts (sourced, not run).

# The machine and time a figure was taken on, as every BENCHMARKS.md entry records them.
bench_header() {
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
}

# bench_tokens DAPT CORPUS VOCAB DIR: trains a BPE of VOCAB tokens on CORPUS
# into DIR/tokenizer.json and encodes CORPUS into the shards DIR/tokens.
bench_tokens() {
  local dapt="$1" corpus="$2" vocab="$3" dir="$4"
  "$dapt" tokenizer train --input "$corpus" --vocab-size "$vocab" --output "$dir/tokenizer.json" >/dev/null 2>&1
  "$dapt" tokenizer encode --tokenizer "$dir/tokenizer.json" --input "$corpus" --output "$dir/tokens" >/dev/null 2>&1
}
