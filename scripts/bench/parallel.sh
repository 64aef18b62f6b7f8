#!/usr/bin/env bash
# Parallel training speed against one rank and against PyTorch DDP, with
# `dapt plan`'s prediction beside every measured figure.
#
# For two configs (small: vocab 4096, hidden 256, 4 layers, seq 256, global
# batch 16; comm: vocab 8192, hidden 512, 4 layers, seq 32, global batch 16 —
# four times the parameters per token, so gradients and activations to send
# weigh more against compute), dapt pretrain runs on 1 rank and under
# mpirun on 2 ranks (D=2, D=2 with ZeRO-1, T=2, P=2 with micro-batches of 4
# and of 2) and on 4 ranks (oversubscribed: 4 ranks on 2 cores, which the plan
# is told with cores_per_node). One BLAS thread per rank. Beside them, two
# one-rank runs at once: what this machine's two cores give two processes
# that never talk, the ceiling of any 2-rank layout here. Per run the
# trainer's own tokens/s of steps 3..STEPS (metrics.jsonl).
#
# The whole set runs ROUNDS times (default 3), each round after its own
# one-rank run, because this machine's speed moves: a process runs for tens
# of seconds at a time up to 1.4 times slower than at its best. Per layout the
# table gives
#   tokens/s  the median over rounds of each run's median step;
#   speed-up  the median and range of the rounds' speed-ups over their one rank;
#   fast      the speed-up in the machine's fast state: the 90th percentile of
#             the layout's step tokens/s pooled over rounds against one rank's
#             (a slow spell only lowers a step's rate; comparing the fast
#             tenths compares the layouts at the same machine speed);
#   outside   the share of the step outside compute, 1 − fast ÷ ranks;
#   ceiling   the median over rounds of the speed-up ÷ that round's two
#             one-rank runs at once (what the two cores gave two processes
#             that never talk, in the same minutes): 0.9 is 1.8× on a machine
#             whose two cores give two processes 2×; a spell in which the
#             machine gives less lowers both sides of the ratio;
#   plan      dapt plan's tokens/s, against the fast figure, and its share of
#             communication and bubble.
# `dapt plan --calibrate` (sgemm rate, the step's share of it at micro-batches
# of 4 and 1, the optimizer update per parameter, all-reduce bandwidth,
# latency; 2 ranks under mpirun) runs in every round too, and the plan uses
# the round whose calibrated step was fastest, the fast state again.
# The PyTorch peer (torchrun, gloo, CPU, one thread per process, transformers
# LlamaForCausalLM of the same shape) trains the same global batch on 1 and 2
# processes in every round.
# Usage: [ROUNDS=N] [ONLY=small|comm] scripts/bench/parallel.sh [steps]
#        (default 6 steps; DAPT_BIN=path to use another build)
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
steps="${1:-6}"
rounds="${ROUNDS:-3}"
configs="${ONLY:-small comm}"
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

# step_tps METRICS: the median tokens/s of steps 3.., then each of those steps'.
step_tps() {
  python3 -c "
import json,statistics,sys
v=[x['tokens_per_second'] for x in map(json.loads, filter(str.strip, open(sys.argv[1]))) if x.get('tokens_per_second') and x['step']>2]
print(statistics.median(v), ' '.join('%.1f' % t for t in v))" "$1"
}

for name in $configs; do
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
            --set data.sequence_length=$seq --set data.global_batch_size=$batch
            --set eval.sequences=0 --set log_every_steps=1000 --set checkpoint.every_steps=0 --set checkpoint.keep_last=1)
  echo
  echo "== $name: vocab $vocab, hidden $hidden, 4 layers, $heads heads, intermediate $inter, seq $seq, global batch $batch, micro-batch $micro unless a row says, fp32 (load $(load))"

  results="$tmp/results-$name"; : > "$results"
  record() {  # round label ranks T P D zero micro "median steps..."
    local tps=$9
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "${tps%% *}" "${tps#* }" "$(load)" >> "$results"
  }
  pretrain() {  # output micro [--set ...]: one dapt pretrain of this config, started by ${launch[@]}
    local out=$1 mb=$2; shift 2
    rm -rf "$out"
    if ! "${launch[@]}" "$dapt" pretrain --input "$tokens" --output "$out" --steps "$steps" "${settings[@]}" --set data.micro_batch_size=$mb "$@" \
         > "$out.log" 2>&1; then
      cat "$out.log"; exit 1
    fi
  }
  run() {  # round label ranks T P D zero micro
    local round=$1 label=$2 n=$3 t=$4 p=$5 d=$6 z=$7 mb=$8 out="$tmp/run-$name"
    launch=("${mpi[@]}" -np "$n")
    [ "$n" -gt 1 ] || launch=(env OPENBLAS_NUM_THREADS=1)
    pretrain "$out" "$mb" --set parallel.tensor=$t --set parallel.pipeline=$p --set parallel.zero=$z
    record "$round" "$label" "$n" "$t" "$p" "$d" "$z" "$mb" "$(step_tps "$out/metrics.jsonl")"
  }
  # Two one-rank runs started together; their steps run side by side, so the
  # k-th steps' rates add up to what the two cores gave at that moment.
  run_two_solo() {  # round
    launch=(env OPENBLAS_NUM_THREADS=1)
    pretrain "$tmp/solo-a" $micro & local a=$!
    pretrain "$tmp/solo-b" $micro
    wait $a
    record "$1" "2 one-rank runs at once" 2 1 1 2 0 $micro "$(python3 -c "
import json,statistics,sys
rate=lambda f: [x['tokens_per_second'] for x in map(json.loads, filter(str.strip, open(f))) if x.get('tokens_per_second') and x['step']>2]
v=[a+b for a,b in zip(rate(sys.argv[1]), rate(sys.argv[2]))]
print(statistics.median(v), ' '.join('%.1f' % t for t in v))" "$tmp/solo-a/metrics.jsonl" "$tmp/solo-b/metrics.jsonl")"
  }
  # Each round runs every layout after its own one-rank run, and the speed-ups
  # are each round's against that round's one rank (see the top of the file).
  for round in $(seq "$rounds"); do
    "${mpi[@]}" -np 2 "$dapt" plan --calibrate --model "$cfg" --seq-len $seq --micro-batch $micro --output "$tmp/cluster-$round.yaml" 2>&1 \
      | grep -v '^wrote' | sed "s/^/calibrate, round $round: /"
    run $round "1 rank" 1 1 1 1 0 $micro
    run_two_solo $round
    run $round "2 ranks D=2" 2 1 1 2 0 $micro
    run $round "2 ranks D=2 zero1" 2 1 1 2 1 $micro
    run $round "2 ranks T=2" 2 2 1 1 0 $micro
    run $round "2 ranks P=2" 2 1 2 1 0 $micro
    run $round "2 ranks P=2 micro-batch 2" 2 1 2 1 0 2
    run $round "4 ranks D=4 (oversub)" 4 1 1 4 0 $micro
    run $round "4 ranks T=2 D=2 (oversub)" 4 2 1 2 0 $micro
    run $round "4 ranks P=2 D=2 (oversub)" 4 1 2 2 0 $micro
    for n in 1 2; do
      peer=$(OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node $n scripts/bench/parallel_ddp.py "$tokens" "$cfg" $batch $seq $micro "$steps" 2>/dev/null | tail -1)
      record $round "pytorch DDP $n proc" $n 1 1 $n 0 $micro "$peer"
    done
  done
  # The plan from the round whose calibrated step rate (at large micro-batches) was highest.
  best=$(for f in "$tmp"/cluster-*.yaml; do
    awk -v f="$f" '/^gflops_per_rank:/ {g = $2} /^compute_efficiency:/ {e = $2} END {print g * e, f}' "$f"
  done | sort -g | tail -1 | cut -d' ' -f2)
  echo "plan: calibration of round $(basename "$best" .yaml | cut -d- -f2) (the fastest step rate at large micro-batches: $(awk '/^gflops_per_rank:/ {g = $2} /^compute_efficiency:/ {e = $2} END {printf "%.1f GFLOP/s", g * e}' "$best"))"
  plan() { "$dapt" plan --model "$cfg" --global-batch $batch --seq-len $seq --cluster "$best" --json "$@"; }
  plan --set ranks_per_node=1 > "$tmp/plan1.jsonl"
  plan --set ranks_per_node=2 > "$tmp/plan2.jsonl"
  # Four ranks on this machine's cores: the plan has them take turns (cores_per_node).
  plan --set ranks_per_node=4 --set cores_per_node="$(nproc)" > "$tmp/plan4.jsonl"
  python3 - "$results" "$tmp" <<'PY'
import json, statistics, sys
results, tmp = sys.argv[1], sys.argv[2]
rows = [l.rstrip("\n").split("\t") for l in open(results) if l.strip()]
rounds = sorted({int(r[0]) for r in rows})
labels = list(dict.fromkeys(r[1] for r in rows))
def tps(label, rnd): return next(float(r[8]) for r in rows if r[1] == label and int(r[0]) == rnd)
def fast(label):
    steps = sorted(float(x) for r in rows if r[1] == label for x in r[9].split())
    return steps[min(len(steps) - 1, int(0.9 * len(steps)))]
def plan(n, t, p, d, z, mb):
    for line in open(f"{tmp}/plan{n}.jsonl"):
        x = json.loads(line)
        # The runs keep every activation: the plan's rows without recomputation.
        if (x["tensor"], x["pipeline"], x["data"], int(x["zero1"]), x["micro_batch"], x["recompute"]) == (t, p, d, z, mb, False):
            comm = x["tensor_comm_seconds"] + x["pipeline_comm_seconds"] + x["data_comm_seconds"]
            return x["tokens_per_second"], comm / x["step_seconds"], x["bubble_seconds"] / x["step_seconds"]
    return None
print(f"{len(rounds)} round(s); speed-up: median (range) over rounds of each round's tokens/s over its one rank's;"
      " fast: 90th percentiles of step tokens/s over all rounds, against one rank's (%.0f)" % fast("1 rank"))
print("%-28s %9s %9s %11s %6s %8s %8s %9s %10s %10s  %s" % ("layout", "tokens/s", "speed-up", "range", "fast", "outside", "ceiling", "plan t/s", "plan/fast", "plan comm", "load"))
def line(label, n, pr=None):
    base = "pytorch DDP 1 proc" if label.startswith("pytorch") else "1 rank"
    speeds = [tps(label, k) / tps(base, k) for k in rounds]
    su, f = statistics.median(speeds), fast(label) / fast(base)
    two = "2 one-rank runs at once"
    ceiling = statistics.median(s / (tps(two, k) / tps("1 rank", k)) for s, k in zip(speeds, rounds))
    loads = [x[10].split()[0] for x in rows if x[1] == label]
    print("%-28s %9.0f %8.2fx %11s %5.2fx %7.0f%% %8s %9s %10s %10s  %s" % (
        label, statistics.median(tps(label, k) for k in rounds), su, "%.2f-%.2f" % (min(speeds), max(speeds)), f,
        max(0.0, 1 - f / n) * 100 if n > 1 else 0.0, "%.2f" % ceiling if n > 1 and label != two else "-",
        "%.0f" % pr[0] if pr else "-", "%.2f" % (pr[0] / fast(label)) if pr else "-",
        "%.0f%%+%.0f%%b" % (pr[1] * 100, pr[2] * 100) if pr else "-", " ".join(loads)))
for label in labels:
    if label.startswith("pytorch"): continue
    r = next(r for r in rows if r[1] == label)
    n, t, p, d, z, mb = map(int, r[2:8])
    line(label, n, None if label.startswith("2 one-rank") else plan(n, t, p, d, z, mb))
line("pytorch DDP 2 proc", 2)
vs = [tps("2 ranks D=2", k) / tps("pytorch DDP 2 proc", k) for k in rounds]
print("pytorch DDP: 1 process %.0f, 2 processes %.0f tokens/s (medians); its speed-up is against its own 1 process" % (
    statistics.median(tps("pytorch DDP 1 proc", k) for k in rounds), statistics.median(tps("pytorch DDP 2 proc", k) for k in rounds)))
print("dapt D=2 against DDP's 2 processes: %.2fx (%.2f-%.2f), fast %.2fx" % (
    statistics.median(vs), min(vs), max(vs), fast("2 ranks D=2") / fast("pytorch DDP 2 proc")))
PY
done
echo
echo "load after: $(load)"
