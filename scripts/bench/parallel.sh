#!/usr/bin/env bash
# Parallel training speed against one rank and against PyTorch DDP, with
# `dapt plan`'s prediction beside every measured figure.
#
# For two configs (small: vocab 4096, hidden 256, 4 layers, seq 256, global
# batch 16; comm: vocab 8192, hidden 512, 4 layers, seq 32, global batch 16 —
# four times the parameters per token, so gradients and activations to send
# weigh more against compute), dapt pretrain runs on 1 rank and under
# mpirun in every layout main supports on 2 ranks (D=2, D=2 with ZeRO-1, T=2,
# P=2 — skipped with a note while the binary refuses it) and on 4 ranks
# (oversubscribed: 4 ranks on 2 cores). One BLAS thread per rank. Per run:
# the median tokens/s of steps 3..STEPS (the trainer's own figure in
# metrics.jsonl), the speed-up over one rank, the share of the step outside
# compute (1 − the one-rank time of this rank's share of the work ÷ the
# step time) and the plan's prediction of tokens/s and of its communication
# and bubble share. `dapt plan --calibrate` runs first under mpirun with 2
# ranks on each config (sgemm rate, the step's share of it, all-reduce
# bandwidth, latency). The PyTorch peer (torchrun, gloo, CPU, one thread per
# process, transformers LlamaForCausalLM of the same shape) trains the same
# global batch on 1 and 2 processes.
# Usage: scripts/bench/parallel.sh [steps]   (default 6; DAPT_BIN=path to use another build)
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
steps="${1:-6}"
bench_pip torch==2.13.0 transformers numpy
bench_dapt
bench_mpirun
bench_tmp parallel
load() { cut -d' ' -f1-3 /proc/loadavg; }

bench_header
echo "$steps steps per run, median of steps 3..$steps"

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

# prediction JSON_LINES T P D ZERO MB -> "tokens/s comm_share bubble_share"
prediction() {
  python3 -c "
import json,sys
t,p,d,z,mb=map(int,sys.argv[2:7])
for line in open(sys.argv[1]):
    r=json.loads(line)
    if (r['tensor'],r['pipeline'],r['data'],int(r['zero1']),r['micro_batch'])==(t,p,d,z,mb):
        comm=r['tensor_comm_seconds']+r['pipeline_comm_seconds']+r['data_comm_seconds']
        print('%.0f %.3f %.3f' % (r['tokens_per_second'], comm/r['step_seconds'], r['bubble_seconds']/r['step_seconds'])); break
else: print('- - -')" "$@"
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
  # Four ranks on two cores: each rank gets half a core.
  gflops=$(grep gflops_per_rank "$tmp/cluster.yaml" | awk '{print $2 / 2}')
  plan --set ranks_per_node=4 --set gflops_per_rank=$gflops > "$tmp/plan4.jsonl"

  printf "%-24s %10s %9s %12s %10s %12s %12s %s\n" layout "tokens/s" speed-up "outside cmp" "plan t/s" "plan/meas" "plan comm" "load"
  base=""
  run() {  # label ranks T P D zero
    local label=$1 n=$2 t=$3 p=$4 d=$5 z=$6 out="$tmp/run-$name-$1" tps
    local launch=("${mpi[@]}" -np "$n")
    [ "$n" -gt 1 ] || launch=(env OPENBLAS_NUM_THREADS=1)
    if ! "${launch[@]}" "$dapt" pretrain --input "$tokens" --output "$out" --steps "$steps" "${settings[@]}" \
         --set parallel.tensor=$t --set parallel.pipeline=$p --set parallel.zero=$z > "$tmp/log" 2>&1; then
      if grep -q "not built yet" "$tmp/log"; then
        printf "%-24s skipped: %s\n" "$label" "$(grep -o 'pipeline parallelism is not built yet[^;]*' "$tmp/log" | head -1)"
        return 0
      fi
      cat "$tmp/log"; exit 1
    fi
    tps=$(median_tps "$out/metrics.jsonl")
    [ -n "$base" ] || base=$tps
    read -r ptps pcomm pbubble <<< "$(prediction "$tmp/plan$n.jsonl" $t $p $d $z $micro)"
    python3 -c "
import sys
label,tps,base,n,ptps,pcomm,pbubble,load=sys.argv[1:9]
tps,base,n=float(tps),float(base),int(n)
# One rank's time for this rank's share of the work (1/n of the step's tokens), against the step time.
outside=max(0.0,1-(tps/base)/n) if n>1 else 0.0
ratio='%.2f' % (float(ptps)/tps) if ptps!='-' else '-'
comm='%.0f%%+%.0f%%b' % (float(pcomm)*100,float(pbubble)*100) if pcomm!='-' else '-'
print('%-24s %10.0f %8.2fx %11.0f%% %10s %12s %12s %s' % (label,tps,tps/base,outside*100,ptps,ratio,comm,load))" \
      "$label" "$tps" "$base" "$n" "$ptps" "$pcomm" "$pbubble" "$(load)"
  }
  run "1 rank" 1 1 1 1 0
  run "2 ranks D=2" 2 1 1 2 0
  run "2 ranks D=2 zero1" 2 1 1 2 1
  run "2 ranks T=2" 2 2 1 1 0
  run "2 ranks P=2" 2 1 2 1 0
  run "4 ranks D=4 (oversub)" 4 1 1 4 0
  run "4 ranks T=2 D=2 (oversub)" 4 2 1 2 0
  run "4 ranks P=2 D=2 (oversub)" 4 1 2 2 0
  for n in 1 2; do
    peer=$(OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node $n scripts/bench/parallel_ddp.py "$tokens" "$cfg" $batch $seq $micro "$steps" 2>/dev/null | tail -1)
    printf "%-24s %10.0f %8s  (load %s)\n" "pytorch DDP $n proc" "$peer" "" "$(load)"
    [ $n = 1 ] && peer1=$peer
  done
  python3 -c "import sys; print('pytorch DDP speed-up at 2 processes: %.2fx' % (float(sys.argv[2])/float(sys.argv[1])))" "$peer1" "$peer"
done
echo
echo "load after: $(load)"
