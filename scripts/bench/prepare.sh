#!/usr/bin/env bash
# Benchmark: `dapt prepare` (release build) on 1 and 2 ranks against the same
# split in plain Python (scripts/bench/prepare_peer.py, standard library only),
# on a >= 100 MB corpus built from data/sample by repetition (patent ids get a
# copy suffix so they stay unique). Prints MB/s, ratios, and whether the
# outputs are byte-identical.
#   scripts/bench/prepare.sh [MB]      (default 100)
set -euo pipefail
cd "$(dirname "$0")/../.."
target_mb="${1:-100}"
work="$(mktemp -d /tmp/dapt-bench-prepare.XXXXXX)"
trap 'rm -rf "$work"' EXIT

swift build -c release >/dev/null
bin="$(swift build -c release --show-bin-path)/dapt"

python3 - "$work" "$target_mb" <<'PY'
import json, os, sys
work, target = sys.argv[1], int(sys.argv[2]) * 1_000_000
src = open("data/sample/patents.jsonl", encoding="utf-8").read().splitlines()
texts = {n: open("data/sample/texts/" + n, encoding="utf-8").read() for n in sorted(os.listdir("data/sample/texts"))}
os.makedirs(work + "/corpus/texts", exist_ok=True)
size, copy = 0, 0
# Text files: 200 copies of each (about 2 MB); JSONL fills the rest.
for k in range(200):
    for name, t in texts.items():
        pid = t.split("patent: ", 1)[1].split("\n", 1)[0]
        body = t.replace("patent: " + pid, "patent: %s-r%05d" % (pid, k), 1)
        path = "%s/corpus/texts/%05d-%s" % (work, k, name)
        open(path, "w", encoding="utf-8").write(body)
        size += len(body.encode())
with open(work + "/corpus/patents.jsonl", "w", encoding="utf-8") as f:
    while size < target:
        for line in src:
            r = json.loads(line)
            r["patent"] += "-r%05d" % copy
            s = json.dumps(r, ensure_ascii=False) + "\n"
            f.write(s)
            size += len(s.encode())
        copy += 1
print("corpus: %.1f MB (%d JSONL copies of the sample + %d text files)" % (size / 1e6, copy, 200 * len(texts)))
PY
inputs=(--input "$work/corpus/patents.jsonl" --input "$work/corpus/texts")
bytes=$(( $(stat -c %s "$work/corpus/patents.jsonl") + $(cat "$work"/corpus/texts/* | wc -c) ))

mpi=(mpirun --oversubscribe --mca btl self,vader,tcp -x OPENBLAS_NUM_THREADS=1)
[ "$(id -u)" -ne 0 ] || mpi+=(--allow-run-as-root)

now() { date +%s.%N; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%dT%H:%MZ)"

echo "load before: $(uptime | sed 's/.*load average: //')"
t0=$(now); "$bin" prepare "${inputs[@]}" --output "$work/out1" >"$work/log1" 2>&1; t1=$(now)
swift1=$(echo "$t1 - $t0" | bc -l)
grep -E "^prepare:|check:" "$work/log1"

echo "load before: $(uptime | sed 's/.*load average: //')"
t0=$(now); "${mpi[@]}" -np 2 "$bin" prepare "${inputs[@]}" --output "$work/out2" >"$work/log2" 2>&1; t1=$(now)
swift2=$(echo "$t1 - $t0" | bc -l)
grep -E "check:" "$work/log2"

echo "load before: $(uptime | sed 's/.*load average: //')"
t0=$(now); python3 scripts/bench/prepare_peer.py "$work/peer.jsonl" "$work/corpus/patents.jsonl" "$work/corpus/texts" ; t1=$(now)
py=$(echo "$t1 - $t0" | bc -l)
echo "load after: $(uptime | sed 's/.*load average: //')"

"$bin" prepare --merge-only "$work/out1/manifest.json" >/dev/null
"$bin" prepare --merge-only "$work/out2/manifest.json" >/dev/null
s1=$(sha1sum < "$work/out1/fragments.jsonl" | cut -c1-40)
s2=$(sha1sum < "$work/out2/fragments.jsonl" | cut -c1-40)
sp=$(sha1sum < "$work/peer.jsonl" | cut -c1-40)
echo "outputs: 1 rank $s1, 2 ranks $s2, python $sp -> $([ "$s1" = "$s2" ] && [ "$s1" = "$sp" ] && echo identical || echo DIFFERENT)"

mb=$(echo "$bytes / 1000000" | bc -l)
printf "\n%-22s %10s %10s %14s\n" "run" "seconds" "MB/s" "vs python"
printf "%-22s %10.2f %10.1f %13.1fx\n" "dapt prepare, 1 rank" "$swift1" "$(echo "$mb / $swift1" | bc -l)" "$(echo "$py / $swift1" | bc -l)"
printf "%-22s %10.2f %10.1f %13.1fx\n" "dapt prepare, 2 ranks" "$swift2" "$(echo "$mb / $swift2" | bc -l)" "$(echo "$py / $swift2" | bc -l)"
printf "%-22s %10.2f %10.1f %13.1fx\n" "python peer (1 proc)" "$py" "$(echo "$mb / $py" | bc -l)" "1.0"
printf "2 ranks / 1 rank speed-up: %.2fx (input %.1f MB)\n" "$(echo "$swift1 / $swift2" | bc -l)" "$mb"
