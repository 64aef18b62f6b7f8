#!/usr/bin/env bash
# Checkpoint save and load on a larger model (hidden 512, 8 layers,
# intermediate 1376, vocabulary 512: 26.4M parameters, 317 MB of weights and
# moments) under several layouts, against the raw write (dd with fsync) and
# read of the same number of bytes on the same file system, and each
# rank's peak resident memory (/usr/bin/time's %M, one file per rank) for a
# run of one step that ends with a checkpoint.
#   - save_s: the run's own "saved ... in X s" (gathering included);
#   - load_s: the resumed run's "loaded and verified in X s" (checksums
#     of every file, then each rank reads its slices);
#   - rank0_MB / other_MB: peak RSS of rank 0 and the largest of the others.
# With OLD_BIN set, the same runs with that binary too (e.g. one built
# before a change), for before/after memory.
# Usage: scripts/bench/checkpoint.sh ["layouts"]  (default "1 t2 t4 t2d2";
# tN = N tensor ranks, pN = N pipeline stages, t2d2 = 2 tensor × 2 data
# ranks, t2p2 = 2 tensor × 2 pipeline ranks, dN = N data ranks, zN = N
# ZeRO-1 data ranks). DAPT_BIN selects the binary.
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
layouts="${1:-1 t2 t4 t2d2}"
bench_dapt
[ -z "${OLD_BIN:-}" ] || [ -x "$OLD_BIN" ] || { echo "checkpoint.sh: OLD_BIN $OLD_BIN is not an executable" >&2; exit 2; }
bench_mpirun
export OPENBLAS_NUM_THREADS=1
bench_tmp checkpoint
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), load: $(cut -d' ' -f1-3 /proc/loadavg), binary: $dapt${OLD_BIN:+, old binary: $OLD_BIN}"
awk 'BEGIN { srand(5); split("claim device signal layer method first second wherein circuit apparatus", w, " ");
  for (d = 0; d < 600; d++) { line = ""; for (i = 0; i < 80; i++) line = line (i ? " " : "") w[1 + int(rand() * 10)]; printf "{\"text\": \"%s\"}\n", line } }' > "$tmp/corpus.jsonl"
bench_tokens "$dapt" "$tmp/corpus.jsonl" 512 "$tmp"
model=(--set model.hidden_size=512 --set model.intermediate_size=1376 --set model.num_hidden_layers=8 --set model.num_attention_heads=8
       --set model.vocab_size=512 --set data.sequence_length=32 --set data.micro_batch_size=4 --set data.global_batch_size=4
       --set eval.sequences=0 --set log_every_steps=1000)
echo "config: hidden 512, 8 layers, intermediate 1376, vocabulary 512, fp32, 1 step then a checkpoint"

# Runs `dapt pretrain` on $1 ranks under /usr/bin/time per rank (peak RSS into $2.<rank>).
run() {
  local np="$1"; bench_rank_rss "$2"; shift 2
  if [ "$np" -eq 1 ]; then "${rank_rss[@]}" "$bin" pretrain "$@"
  else "${mpi[@]}" -np "$np" "${rank_rss[@]}" "$bin" pretrain "$@"; fi
}
peak() { bench_peak_mb %.0f "$1"; }
layout_args() {
  case "$1" in
    1) echo 1 ;;
    t2d2) echo 4 --set parallel.tensor=2 ;;
    t2p2) echo 4 --set parallel.tensor=2 --set parallel.pipeline=2 ;;
    p*) echo "${1#p}" --set parallel.pipeline="${1#p}" ;;
    t*) echo "${1#t}" --set parallel.tensor="${1#t}" ;;
    d*) echo "${1#d}" ;;
    z*) echo "${1#z}" --set parallel.zero=1 ;;
  esac
}
printf "%-5s %-7s %-9s %-9s %-11s %-9s %-11s %-10s %-9s\n" binary layout ckpt_MB save_s raw_write_s load_s raw_read_s rank0_MB other_MB
for which in new ${OLD_BIN:+old}; do
  bin="$dapt"; [ "$which" = old ] && bin="$OLD_BIN"
  for layout in $layouts; do
    read -r np extra <<< "$(layout_args "$layout")"
    out="$tmp/$which-$layout"
    # shellcheck disable=SC2086
    run "$np" "$out.rss" --input "$tmp/tokens" --output "$out" --steps 2 --stop-after 1 "${model[@]}" $extra 2> "$out.log"
    save=$(grep -o "MB in [0-9.]* s" "$out.log" | tail -1 | cut -d' ' -f3)
    mb=$(grep -o "([0-9.]* MB in" "$out.log" | tail -1 | tr -d '(' | cut -d' ' -f1)
    rank0=$(peak "$out.rss.0"); other=0
    for f in "$out".rss.*; do [ "$f" = "$out.rss.0" ] || other=$(( $(peak "$f") > other ? $(peak "$f") : other )); done
    # shellcheck disable=SC2086
    run "$np" "$out.resume-rss" --resume "$out" --output "$out" --stop-after 0 $extra 2> "$out.resume.log"
    load=$(grep -o "loaded and verified in [0-9.]* s" "$out.resume.log" | cut -d' ' -f5)
    bytes=$(du -cb "$out"/checkpoint-00000001/* | tail -1 | cut -f1)
    raw_write=$( { /usr/bin/time -f "%e" dd if=/dev/urandom of="$tmp/raw.bin" bs=1M count=$(( (bytes + 1048575) / 1048576 )) conv=fsync status=none; } 2>&1 )
    sync; raw_read=$( { /usr/bin/time -f "%e" dd if="$tmp/raw.bin" of=/dev/null bs=1M status=none; } 2>&1 ); rm -f "$tmp/raw.bin"
    printf "%-5s %-7s %-9s %-9s %-11s %-9s %-11s %-10s %-9s\n" "$which" "$layout" "$mb" "$save" "$raw_write" "$load" "$raw_read" "$rank0" "${other/#0/-}"
  done
done
echo "(more ranks than the $(nproc) cores run oversubscribed, one BLAS thread each)"
