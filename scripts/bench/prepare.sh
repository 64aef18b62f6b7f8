#!/usr/bin/env bash
# Benchmark: `dapt prepare` (release build) on 1 and 2 ranks against the same
# split in plain Python (scripts/bench/prepare_peer.py, standard library only),
# on a >= 100 MB corpus built from data/sample by repetition (patent ids get a
# copy suffix so they stay unique). Prints MB/s, ratios, and whether the
# outputs are byte-identical.
#   scripts/bench/prepare.sh [MB]      (default 100)
# BASELINE=/path/to/other/dapt also runs that binary (say, a release build of
# main) on 1 rank on the same input, to compare two versions in one run.
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

# Runs a command, its output to $work/log.NAME; sets WALL and CPU (user+sys
# of the command and its children, so all ranks under mpirun).
timed() {
  local name="$1"; shift
  local t
  t=$( { TIMEFORMAT="%R %U %S"; time "$@" >"$work/log.$name" 2>&1; } 2>&1 )
  WALL=$(echo "$t" | awk '{print $1}'); CPU=$(echo "$t" | awk '{print $2 + $3}')
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%dT%H:%MZ)"

echo "load before 1 rank: $(uptime | sed 's/.*load average: //')"
timed swift1 "$bin" prepare "${inputs[@]}" --output "$work/out1"; swift1=$WALL; cpu1=$CPU
grep -E "^prepare:|check:" "$work/log.swift1"
echo "load before 2 ranks: $(uptime | sed 's/.*load average: //')"
timed swift2 "${mpi[@]}" -np 2 "$bin" prepare "${inputs[@]}" --output "$work/out2"; swift2=$WALL; cpu2=$CPU
grep -E "check:" "$work/log.swift2"
if [ -n "${BASELINE:-}" ]; then
  echo "load before baseline: $(uptime | sed 's/.*load average: //')"
  timed base "$BASELINE" prepare "${inputs[@]}" --output "$work/outb"; base=$WALL; cpub=$CPU
  grep -E "check:" "$work/log.base"
fi
echo "load before python: $(uptime | sed 's/.*load average: //')"
timed python python3 scripts/bench/prepare_peer.py "$work/peer.jsonl" "$work/corpus/patents.jsonl" "$work/corpus/texts"; py=$WALL; cpupy=$CPU
cat "$work/log.python"
echo "load after: $(uptime | sed 's/.*load average: //')"

"$bin" prepare --merge-only "$work/out1/manifest.json" >/dev/null
"$bin" prepare --merge-only "$work/out2/manifest.json" >/dev/null
s1=$(sha1sum < "$work/out1/fragments.jsonl" | cut -c1-40)
s2=$(sha1sum < "$work/out2/fragments.jsonl" | cut -c1-40)
sp=$(sha1sum < "$work/peer.jsonl" | cut -c1-40)
echo "outputs: 1 rank $s1, 2 ranks $s2, python $sp -> $([ "$s1" = "$s2" ] && [ "$s1" = "$sp" ] && echo identical || echo DIFFERENT)"
if [ -n "${BASELINE:-}" ]; then
  "$bin" prepare --merge-only "$work/outb/manifest.json" >/dev/null
  sb=$(sha1sum < "$work/outb/fragments.jsonl" | cut -c1-40)
  echo "baseline output: $sb -> $([ "$sb" = "$s1" ] && echo identical || echo DIFFERENT)"
fi

mb=$(echo "$bytes / 1000000" | bc -l)
row() { printf "%-22s %9.2f %8.1f %9.2f %12.1f %10.1fx %10.1fx\n" "$1" "$2" "$(echo "$mb / $2" | bc -l)" "$3" "$(echo "$mb / $3" | bc -l)" "$(echo "$py / $2" | bc -l)" "$(echo "$cpupy / $3" | bc -l)"; }
printf "\n%-22s %9s %8s %9s %12s %11s %11s\n" "run" "wall s" "MB/s" "CPU s" "MB/CPU-s" "wall ratio" "CPU ratio"
row "dapt prepare, 1 rank" "$swift1" "$cpu1"
row "dapt prepare, 2 ranks" "$swift2" "$cpu2"
[ -z "${BASELINE:-}" ] || row "baseline dapt, 1 rank" "$base" "$cpub"
row "python peer (1 proc)" "$py" "$cpupy"
printf "2 ranks / 1 rank wall speed-up: %.2fx (input %.1f MB; ratios are python / dapt)\n" "$(echo "$swift1 / $swift2" | bc -l)" "$mb"
