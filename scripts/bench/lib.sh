# Shared pieces of the benchmark scripts (sourced, not run).

# An inherited OPENBLAS_CORETYPE pins OpenBLAS's kernels (Haswell: AVX2 on a
# CPU with AVX-512) while the peers pick theirs for the CPU: every script
# lifts it, so both sides run the kernels their library picks (filter.sh
# also runs once under the pin, for the record).
bench_pinned_coretype="${OPENBLAS_CORETYPE:-}"
unset OPENBLAS_CORETYPE

# The machine and time a figure was taken on, as every BENCHMARKS.md entry records them.
bench_header() {
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "OpenBLAS: its own choice of kernels (inherited OPENBLAS_CORETYPE: ${bench_pinned_coretype:-none}, lifted)"
}

# bench_tokens DAPT CORPUS VOCAB DIR: trains a BPE of VOCAB tokens on CORPUS
# into DIR/tokenizer.json and encodes CORPUS into the shards DIR/tokens.
bench_tokens() {
  local dapt="$1" corpus="$2" vocab="$3" dir="$4"
  "$dapt" tokenizer train --input "$corpus" --vocab-size "$vocab" --output "$dir/tokenizer.json" >/dev/null 2>&1
  "$dapt" tokenizer encode --tokenizer "$dir/tokenizer.json" --input "$corpus" --output "$dir/tokens" >/dev/null 2>&1
}

# A relative DAPT_BIN (or checkpoint.sh's OLD_BIN) names a path from where
# the script was started: made absolute here, as the scripts source this file
# before they cd to the repository root.
case "${DAPT_BIN:-}" in ''|/*) ;; *) DAPT_BIN="$PWD/$DAPT_BIN" ;; esac
case "${OLD_BIN:-}" in ''|/*) ;; *) OLD_BIN="$PWD/$OLD_BIN" ;; esac

# bench_pip PKG...: installs the peers' Python packages quietly (those
# present are left as they are), with torch held at the fixtures' version.
bench_pip() {
  local constraints="${TMPDIR:-/tmp}/dapt-bench-constraints.txt"
  echo "torch==2.13.0" > "$constraints"
  python3 -m pip install -q -c "$constraints" "$@" 2>&1 | grep -v -i "warning" || true
}

# bench_corpus FILE RECORDS SEED: the bilingual patent-like JSONL corpus of
# scripts/fixtures/tokenizer_corpus.py (which draws Chinese words from jieba's
# dictionary: installed first when missing). Run from the repository root,
# as the scripts are once they have cd'd there.
bench_corpus() {
  python3 -c "import jieba" 2>/dev/null || bench_pip jieba
  python3 scripts/fixtures/tokenizer_corpus.py "$1" --records "$2" --seed "$3" >/dev/null
}

# bench_dapt: sets `dapt` to the release build, built first, or to $DAPT_BIN
# (another build, used as it is).
bench_dapt() {
  if [ -z "${DAPT_BIN:-}" ]; then swift build -c release --product dapt >/dev/null; fi
  dapt="${DAPT_BIN:-$(swift build -c release --show-bin-path)/dapt}"
  [ -x "$dapt" ] || { echo "$(basename "$0"): $dapt is not an executable" >&2; exit 2; }
}

# bench_mpirun [ARGS...]: sets the array `mpi` to mpirun on this host
# (oversubscribed, shared memory, one BLAS thread per rank, root allowed),
# followed by ARGS.
bench_mpirun() {
  mpi=(mpirun --oversubscribe --mca btl self,vader,tcp -x OPENBLAS_NUM_THREADS=1 "$@")
  [ "$(id -u)" -ne 0 ] || mpi+=(--allow-run-as-root)
}

# bench_tmp NAME: sets `tmp` to a fresh directory, removed when the script
# exits. Its EXIT trap replaces any the script set before (set yours after).
bench_tmp() {
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/dapt-$1-bench.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
}

# bench_rank_rss PREFIX: sets the array `rank_rss` to a command prefix that
# runs a command under /usr/bin/time and writes its peak resident set (KB) to
# PREFIX.<rank> (OMPI_COMM_WORLD_RANK; 0 alone): one file per rank, so the
# ranks' figures cannot interleave as lines of a shared stream can.
bench_rank_rss() {
  rank_rss=(sh -c '/usr/bin/time -f "rss-kb %M" -o "$0.${OMPI_COMM_WORLD_RANK:-0}" "$@"' "$1")
}

# bench_peak_mb FORMAT FILE...: the largest peak in these bench_rank_rss files
# in MB (printf FORMAT), or "-" when there is none (e.g. no other ranks).
bench_peak_mb() {
  local format="$1" files=() f
  shift
  for f in "$@"; do if [ -f "$f" ]; then files+=("$f"); fi; done
  if [ ${#files[@]} -eq 0 ]; then echo -; return 0; fi
  awk -v format="$format" '$1 == "rss-kb" && $2 > m { m = $2 } END { if (m) printf format, m / 1024; else printf "-" }' "${files[@]}"
}
