#!/usr/bin/env bash
# Parallel training speed against one rank and against PyTorch DDP, with
# `dapt plan`'s prediction beside every measured figure.
#
# For two configs (small: vocab 4096, hidden 256, 4 layers, seq 256, global
# batch 16; comm: vocab 8192, hidden 512, 4 layers, seq 32, global batch 16 —
# four times the parameters per token, so gradients and activations to send
# weigh more against compute), dapt pretrain runs on 1 rank and under
# mpirun on 2 ranks (D=2, D=2 with ZeRO-1, T=2, P=2) and on 4 ranks
# (oversubscribed: 4 ranks on 2 cores, which the plan is told with
# cores_per_node). One BLAS thread per rank. Per run: the median tokens/s of
# steps 3..STEPS (the trainer's own figure in metrics.jsonl). The whole set
# runs ROUNDS times (default 3), each round after its own one-rank run; per
# layout the table gives the median tokens/s, the median and range of the
# rounds' speed-ups over their one rank (the machine's speed drifts from
# minute to minute), the share of the step outside compute (1 − the one-rank
# time of this rank's share of the work ÷ the step time, from the median
# speed-up) and the plan's prediction of tokens/s (against the median) and of
# its communication and bubble share. `dapt plan --calibrate` runs first
# under mpirun with 2 ranks on each config (sgemm rate, the step's share of
# it, all-reduce bandwidth, latency). The PyTorch peer (torchrun, gloo, CPU,
# one thread per process, transformers LlamaForCausalLM of the same shape)
# trains the same global batch on 1 and 2 processes in every round.
# Usage: [ROUNDS=N] scripts/bench/parallel.sh [steps]   (default 6; DAPT_BIN=path to use another build)
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
steps="${1:-6}"
rounds="${ROUNDS:-3}"
bench_pip torch==2.13.0 transformers numpy
bench_dapt
bench_mpirun
bench_tmp parallel
load() { cut -d' ' -f1-3 /proc/loadavg; }

bench_header
echo "$steps steps per run, median of steps 3..$steps; $rounds round(s)"

corpus="$tmp/corpus.jsonl"
bench_corpus "$corpus" 3000 1
for vocab in 4096 8192; do
  mkdir "$tmp/vocab$vocab"
  bench_tokens "$dapt" "$corpus" $vocab "$tmp/vocab$vocab"
done

median_tps() {
  python3 -c "
import json,statistics,sys
m=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(statistics.median(x['tokens_per_second'] for x in m if x.get('tokens_per_second') and x['step']>2))" "$1"
}

for name in small comm; do
  if [ $name = small ]; then
    vocab=4096 hidden=256 inter=688 heads=4 seq=256 batch=16 micro=4
  else
    vocab=8192 hidden=512 inter=1376 heads=8 seq=32 batch=16 micro=4
  fi
  tokens="$tmp/vocab$vocab/tokens"
  cfg="$tmp/$name.json"
  printf '{"model_type": "llama", "vocab_size": %d, "hidden_size": %d, "intermediate_size": %d, "num_hidden_layers": 4, "num_attention_heads": %d, "num_key_value_heads": %d}\n' \
    $vocab $hidden $inter $heads $heads > "$cfg"
  settings=(--set model.vocab_size=$vocab --set model.hidden_size=$hidden --set model.intermediate_size=$inter
            --set model.num_hidden_layers=4 --set model.num_attention_heads=$heads --set model.num_key_value_heads=$heads
            --set data.sequence_length=$seq --set data.micro_batch_size=$micro --set data.global_batch_size=$batch
            --set eval.sequences=0 --set log_every_steps=1000 --set checkpoint.every_steps=0 --set checkpoint.keep_last=1)
  echo
  echo "== $name: vocab $vocab, hidden $hidden, 4 layers, $heads heads, intermediate $inter, seq $seq, global batch $batch, micro-batch $micro, fp32 (load $(load))"
  "${mpi[@]}" -np 2 "$dapt" plan --calibrate --model "$cfg" --seq-len $seq --micro-batch $micro --output "$tmp/cluster.yaml" 2>&1 | grep -v '^wrote' | sed 's/^/calibrate: /'
  plan() { "$dapt" plan --model "$cfg" --global-batch $batch --seq-len $seq --cluster "$tmp/cluster.yaml" --json "$@"; }
  plan --set ranks_per_node=1 > "$tmp/plan1.jsonl"
  plan --set ranks_per_node=2 > "$tmp/plan2.jsonl"
  # Four ranks on this machine's cores: the plan has them take turns (cores_per_node).
  plan --set ranks_per_node=4 --set cores_per_node="$(nproc)" > "$tmp/plan4.jsonl"

  results="$tmp/results-$name"; : > "$results"
  run() {  # round label ranks T P D zero
    local round=$1 label=$2 n=$3 t=$4 p=$5 d=$6 z=$7 out="$tmp/run-$name" tps
    local launch=("${mpi[@]}" -np "$n")
    [ "$n" -gt 1 ] || launch=(env OPENBLAS_NUM_THREADS=1)
    rm -rf "$out"
    if ! "${launch[@]}" "$dapt" pretrain --input "$tokens" --output "$out" --steps "$steps" "${settings[@]}" \
         --set parallel.tensor=$t --set parallel.pipeline=$p --set parallel.zero=$z > "$tmp/log" 2>&1; then
      cat "$tmp/log"; exit 1
    fi
    tps=$(median_tps "$out/metrics.jsonl")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$label" "$n" "$t" "$p" "$d" "$z" "$tps" "$(load)" >> "$results"
  }
  # Each round runs every layout after its own one-rank run, and the speed-ups
  # are each round's against that round's one rank: this machine's speed
  # drifts by tens of percent from minute to minute, which one baseline
  # measured minutes before a run would carry into its ratio.
  for round in $(seq "$rounds"); do
    run $round "1 rank" 1 1 1 1 0
    run $round "2 ranks D=2" 2 1 1 2 0
    run $round "2 ranks D=2 zero1" 2 1 1 2 1
    run $round "2 ranks T=2" 2 2 1 1 0
    run $round "2 ranks P=2" 2 1 2 1 0
    run $round "4 ranks D=4 (oversub)" 4 1 1 4 0
    run $round "4 ranks T=2 D=2 (oversub)" 4 2 1 2 0
    run $round "4 ranks P=2 D=2 (oversub)" 4 1 2 2 0
    for n in 1 2; do
      peer=$(OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node $n scripts/bench/parallel_ddp.py "$tokens" "$cfg" $batch $seq $micro "$steps" 2>/dev/null | tail -1)
      printf '%s\t%s\t%s\t1\t1\t%s\t0\t%s\t%s\n' "$round" "pytorch DDP $n proc" "$n" "$n" "$peer" "$(load)" >> "$results"
    done
  done
  python3 - "$results" "$tmp" $micro <<'PY'
import json, statistics, sys
results, tmp, micro = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [l.rstrip("\n").split("\t") for l in open(results) if l.strip()]
rounds = sorted({int(r[0]) for r in rows})
labels = list(dict.fromkeys(r[1] for r in rows))
def tps(label, rnd): return next(float(r[7]) for r in rows if r[1] == label and int(r[0]) == rnd)
def plan(n, t, p, d, z):
    for line in open(f"{tmp}/plan{n}.jsonl"):
        x = json.loads(line)
        if (x["tensor"], x["pipeline"], x["data"], int(x["zero1"]), x["micro_batch"]) == (t, p, d, z, micro):
            comm = x["tensor_comm_seconds"] + x["pipeline_comm_seconds"] + x["data_comm_seconds"]
            return x["tokens_per_second"], comm / x["step_seconds"], x["bubble_seconds"] / x["step_seconds"]
    return None
print(f"{len(rounds)} round(s); speed-up: median over rounds of each round's tokens/s over that round's one rank (range)")
print("%-26s %9s %9s %13s %8s %9s %10s %10s  %s" % ("layout", "tokens/s", "speed-up", "range", "outside", "plan t/s", "plan/meas", "plan comm", "load"))
for label in labels:
    if label.startswith("pytorch"): continue
    r = next(r for r in rows if r[1] == label)
    n, t, p, d, z = map(int, r[2:7])
    speeds = [tps(label, k) / tps("1 rank", k) for k in rounds]
    med, su = statistics.median(tps(label, k) for k in rounds), statistics.median(speeds)
    outside = max(0.0, 1 - su / n) if n > 1 else 0.0
    pr = plan(n, t, p, d, z)
    loads = [x[8].split()[0] for x in rows if x[1] == label]
    print("%-26s %9.0f %8.2fx %13s %7.0f%% %9s %10s %10s  %s" % (
        label, med, su, "%.2f-%.2f" % (min(speeds), max(speeds)), outside * 100,
        "%.0f" % pr[0] if pr else "-", "%.2f" % (pr[0] / med) if pr else "-",
        "%.0f%%+%.0f%%b" % (pr[1] * 100, pr[2] * 100) if pr else "-", " ".join(loads)))
ddp = [tps("pytorch DDP 2 proc", k) / tps("pytorch DDP 1 proc", k) for k in rounds]
vs = [tps("2 ranks D=2", k) / tps("pytorch DDP 2 proc", k) for k in rounds]
print("pytorch DDP: 1 process %.0f, 2 processes %.0f tokens/s (medians); speed-up at 2 processes %.2fx (%.2f-%.2f)" % (
    statistics.median(tps("pytorch DDP 1 proc", k) for k in rounds), statistics.median(tps("pytorch DDP 2 proc", k) for k in rounds),
    statistics.median(ddp), min(ddp), max(ddp)))
print("dapt D=2 against DDP's 2 processes: %.2fx (%.2f-%.2f)" % (statistics.median(vs), min(vs), max(vs)))
PY
done
echo
echo "load after: $(load)"
