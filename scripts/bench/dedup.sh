#!/usr/bin/env bash
# Benchmark of `dapt dedup` (1 and 2 ranks) against datasketch and rensa on
# the same JSONL corpus, same shingles (5 characters after dapt's
# normalisation) and the same threshold. Prints records/s, MB/s, CPU seconds,
# peak RSS and precision/recall against exact Jaccard, with ratios.
#
#   scripts/bench/dedup.sh            # 100k records in $DEDUP_BENCH_DIR (default /tmp/dapt-dedup-bench)
#   RECORDS=20000 scripts/bench/dedup.sh
#   BASELINE=/path/to/other/dapt scripts/bench/dedup.sh   # also runs that binary (say, a release build of main)
#                                          # on 1 rank on the same corpus, to compare two versions in one run
#   REUSE_PEERS=1 scripts/bench/dedup.sh   # reuse the peers' timings and pairs from an earlier run in the same
#                                          # directory (said so in the output, with the time they were taken)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
records=${RECORDS:-100000}
threshold=${THRESHOLD:-0.85}
dir=${DEDUP_BENCH_DIR:-/tmp/dapt-dedup-bench}
mkdir -p "$dir"
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

echo "== peers"
pip install -q datasketch >/dev/null 2>&1 && echo "datasketch: $(python3 -c 'import datasketch; print(datasketch.__version__)')"
have_rensa=1
pip install -q rensa >/dev/null 2>&1 || { have_rensa=0; echo "rensa: pip install FAILED, skipped"; }
[ "$have_rensa" = 1 ] && echo "rensa: $(pip show rensa 2>/dev/null | awk '/^Version/ {print $2}')"

echo "== build"
swift build -c release --product dapt 2>&1 | tail -1
dapt="$(swift build -c release --show-bin-path)/dapt"

corpus="$dir/corpus-$records.jsonl"
labels="$dir/labels-$records.jsonl"
if [ ! -s "$corpus" ] || [ ! -s "$labels" ]; then
  echo "== corpus: $records records by controlled edits of real text (scripts/bench/make_dedup_corpus.py)"
  python3 scripts/bench/make_dedup_corpus.py "$corpus" "$labels" --records "$records"
fi
bytes=$(stat -c %s "$corpus")

echo "== machine"
echo "nproc: $(nproc); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); date: $(date -u +%FT%TZ)"
echo "corpus: $corpus ($records records, $bytes bytes)"

config="$dir/dedup.yaml"
printf 'dedup:\n  threshold: %s\n  write_pairs: true\n' "$threshold" > "$config"
exact_config="$dir/dedup-exact.yaml"
printf 'dedup:\n  threshold: %s\n  write_pairs: true\n  verify: exact\n' "$threshold" > "$exact_config"
estimated_config="$dir/dedup-estimated.yaml"
printf 'dedup:\n  threshold: %s\n  write_pairs: true\n  verify: estimated\n' "$threshold" > "$estimated_config"

results="$dir/results.tsv"
: > "$results"
# name wall cpu rss(bytes)
run_dapt() {
  local name=$1 np=$2 config=${3:-$config} out="$dir/out-$1"
  rm -rf "$out"
  echo "load before $name: $(uptime | sed 's/.*load average/load average/')"
  if [ "$np" = 1 ]; then
    /usr/bin/time -f "%e %U %S %M" -o "$dir/time-$name" "$dapt" dedup --input "$corpus" --output "$out" --config "$config" > "$dir/log-$name" 2>&1
  else
    /usr/bin/time -f "%e %U %S %M" -o "$dir/time-$name" mpirun -np "$np" --oversubscribe --mca btl self,vader,tcp \
      "$dapt" dedup --input "$corpus" --output "$out" --config "$config" > "$dir/log-$name" 2>&1
  fi
  grep -E "^dedup:|removed:|kept:|remaining|counts:|LSH:|candidate pairs" "$dir/log-$name" | sed 's/^/  /'
  python3 -c "import json; r = json.load(open('$out/report.json')); print('  phases (s): ' + ', '.join(f'{k} {v:.2f}' for k, v in r['seconds'].items()))"
  read -r wall user sys _ < "$dir/time-$name"
  local rss
  rss=$(python3 -c "import json; print(json.load(open('$out/report.json'))['peak_resident_bytes_max'])")
  echo -e "$name\t$wall\t$(python3 -c "print($user + $sys)")\t$rss" >> "$results"
}
run_dapt dapt-1rank 1
if [ -n "${BASELINE:-}" ]; then
  built=$dapt; dapt=$BASELINE
  run_dapt baseline-1rank 1
  dapt=$built
  cmp -s "$dir/out-dapt-1rank/kept.jsonl" "$dir/out-baseline-1rank/kept.jsonl" && echo "baseline: kept.jsonl byte-identical" || echo "baseline: kept.jsonl DIFFERS"
fi
run_dapt dapt-2ranks 2
run_dapt dapt-estim 1 "$estimated_config"
run_dapt dapt-exact 1 "$exact_config"
cmp -s "$dir/out-dapt-1rank/kept.jsonl" "$dir/out-dapt-2ranks/kept.jsonl" && cmp -s "$dir/out-dapt-1rank/removed.jsonl" "$dir/out-dapt-2ranks/removed.jsonl" \
  && cmp -s "$dir/out-dapt-1rank/clusters.jsonl" "$dir/out-dapt-2ranks/clusters.jsonl" \
  && echo "1 and 2 ranks: kept, removed, clusters byte-identical" || echo "1 and 2 ranks: OUTPUTS DIFFER"

peers=(datasketch)
[ "$have_rensa" = 1 ] && peers+=(rensa)
for peer in "${peers[@]}"; do
  if [ "${REUSE_PEERS:-0}" = 1 ] && [ -s "$dir/time-$peer" ] && [ -s "$dir/pairs-$peer.jsonl" ] && [ -s "$dir/peer-$peer.json" ]; then
    echo "$peer: REUSED from an earlier run (timings taken $(date -u -r "$dir/time-$peer" +%FT%TZ))"
    cat "$dir/peer-$peer.json" | sed 's/^/  /'
    read -r wall user sys rsskb < "$dir/time-$peer"
    echo -e "$peer\t$wall\t$(python3 -c "print($user + $sys)")\t$((rsskb * 1024))" >> "$results"
    continue
  fi
  echo "load before $peer: $(uptime | sed 's/.*load average/load average/')"
  /usr/bin/time -f "%e %U %S %M" -o "$dir/time-$peer" python3 scripts/bench/dedup_peers.py run "$peer" "$corpus" "$dir/pairs-$peer.jsonl" \
    --threshold "$threshold" > "$dir/peer-$peer.json"
  cat "$dir/peer-$peer.json" | sed 's/^/  /'
  read -r wall user sys rsskb < "$dir/time-$peer"
  echo -e "$peer\t$wall\t$(python3 -c "print($user + $sys)")\t$((rsskb * 1024))" >> "$results"
done

echo "== accuracy against exact Jaccard (threshold $threshold)"
preds=("dapt=$dir/out-dapt-1rank/pairs.jsonl" "dapt-estim=$dir/out-dapt-estim/pairs.jsonl" "dapt-exact=$dir/out-dapt-exact/pairs.jsonl")
for peer in "${peers[@]}"; do preds+=("$peer=$dir/pairs-$peer.jsonl"); done
python3 scripts/bench/dedup_peers.py evaluate "$corpus" "$labels" "${preds[@]}" --threshold "$threshold" > "$dir/accuracy.json"

echo "== results"
python3 - "$results" "$dir/accuracy.json" "$records" "$bytes" "$dir" <<'PY'
import json, sys
results, accuracy, records, size, d = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
acc = {}
for line in open(accuracy):
    acc.update(json.loads(line))
rows = [l.rstrip("\n").split("\t") for l in open(results) if l.strip()]
base = {r[0]: float(r[1]) for r in rows}
cpu = {r[0]: float(r[2]) for r in rows}
print(f"{'tool':<12} {'wall s':>8} {'cpu s':>8} {'records/s':>10} {'MB/s':>7} {'peak RSS MB':>11} {'precision':>9} {'recall':>7} {'speed vs datasketch (wall, cpu)':>32} {'vs rensa (wall, cpu)':>21}")
for name, wall, c, rss in rows:
    wall, c, rss = float(wall), float(c), int(rss)
    a = acc.get(name if name in acc else ("dapt" if name.startswith("dapt") else name), {}) if not name.startswith("baseline") else {}
    vs = lambda p: f"{base[p] / wall:.1f}x, {cpu[p] / c:.1f}x" if p in base else "-"
    print(f"{name:<12} {wall:>8.2f} {c:>8.2f} {records / wall:>10.0f} {size / wall / 1e6:>7.2f} {rss / 1e6:>11.0f} "
          f"{a.get('precision', float('nan')):>9.4f} {a.get('recall', float('nan')):>7.4f} {vs('datasketch'):>32} {vs('rensa'):>21}")
if "baseline-1rank" in base:
    print(f"dapt 1 rank vs baseline 1 rank (wall, cpu): {base['baseline-1rank'] / base['dapt-1rank']:.2f}x, {cpu['baseline-1rank'] / cpu['dapt-1rank']:.2f}x")
if "dapt-1rank" in base and "dapt-2ranks" in base:
    print(f"dapt speed-up 1 -> 2 ranks (wall): {base['dapt-1rank'] / base['dapt-2ranks']:.2f}x")
for p in ("datasketch", "rensa"):
    try:
        j = json.load(open(f"{d}/peer-{p}.json"))
        print(f"{p}: bands x rows {j['bands_x_rows']}, shingling in Python {j['shingle_seconds']:.1f} s, MinHash+LSH+query {j['minhash_lsh_seconds']:.1f} s")
    except FileNotFoundError:
        pass
print("accuracy: " + json.dumps(acc))
PY
