#!/usr/bin/env bash
# Cluster runtime figures, dapt against peers on the same sizes and threads:
#   sgemm         dapt (OpenBLAS) vs NumPy matmul        1 rank, 1 and 2 threads
#   all-reduce    dapt (Open MPI) vs mpi4py              2 ranks, 16 MiB float sum
#   exchange      dapt (ZeroMQ, 1 KiB records batched)   2 ranks
#                 vs pyzmq PUSH/PULL of pre-batched 256 KiB messages (the raw transport)
# Usage: scripts/bench/cluster.sh   (ROUNDS=N alternating rounds of the 2-rank figures; default 3)
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
bench_pip mpi4py pyzmq numpy
swift build -c release --product dapt >/dev/null
dapt="$(swift build -c release --show-bin-path)/dapt"
mpi=(mpirun --oversubscribe --mca btl self,vader,tcp)
[ "$(id -u)" -ne 0 ] || mpi+=(--allow-run-as-root)
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"

field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }

for threads in 1 2; do
  OPENBLAS_NUM_THREADS=$threads "$dapt" cluster check --gemm 1024 --exchange-mib 1 --json "$tmp/one" >/dev/null
  d=$(field "$tmp/one.rank0" "['sgemmGFLOPs']")
  p=$(OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads python3 -c "
import numpy as np, time
n=1024
a=(np.arange(n*n)%17-8).astype(np.float32).reshape(n,n)/8; b=(np.arange(n*n)%13-6).astype(np.float32).reshape(n,n)/6
a@b; best=9e9
for _ in range(3):
    t=time.perf_counter(); a@b; best=min(best,time.perf_counter()-t)
print(2*n**3/best/1e9)")
  printf "sgemm 1024^3, %d thread(s): dapt %.1f GFLOP/s, numpy %.1f GFLOP/s, ratio %.2f\n" "$threads" "$d" "$p" "$(python3 -c "print($d/$p)")"
done

# The 2-rank figures in ROUNDS alternating rounds (dapt, then the peer): each
# ratio is the median over rounds, with its range, since this machine's speed
# drifts between runs seconds apart.
rounds="${ROUNDS:-3}"
for r in $(seq "$rounds"); do
  "${mpi[@]}" -np 2 -x OPENBLAS_NUM_THREADS=1 "$dapt" cluster check --gemm 1024 --exchange-mib 16 --throughput-mib 256 \
    --record-bytes 1024 --allreduce-mib 16 --json "$tmp/two-$r" > "$tmp/dapt-$r.txt"
  "${mpi[@]}" -np 2 -x OPENBLAS_NUM_THREADS=1 python3 scripts/bench/cluster_peer.py gemm=1024 allreduce_mib=16 \
    stream_mib=256 message_bytes=262144 > "$tmp/peer-$r.json"
done
cat "$tmp/dapt-1.txt"
python3 - "$tmp" "$rounds" <<'PY'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
d = [json.load(open(f"{tmp}/two-{r}.rank0")) for r in range(1, rounds + 1)]
p = [json.load(open(f"{tmp}/peer-{r}.json")) for r in range(1, rounds + 1)]
def row(what, dk, pk, unit, peer_name=""):
    ratios = [a[dk] / b[pk] for a, b in zip(d, p)]
    print(f"{what}: dapt {statistics.median(a[dk] for a in d):.2f} {unit}, {peer_name}{statistics.median(b[pk] for b in p):.2f} {unit}, "
          f"ratio {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f} over {rounds} round(s))")
row("all-reduce 16 MiB, 2 ranks", "allReduceBusGBps", "allreduce_bus_gbps", "GB/s bus", "mpi4py ")
row("bucketed non-blocking all-reduce 16 MiB in 4 MiB buckets, 2 ranks (dapt: ring of messages)",
    "bucketedAllReduceBusGBps", "bucketed_allreduce_bus_gbps", "GB/s bus", "mpi4py Iallreduce ")
row("bucketed non-blocking reduce-scatter (ZeRO-1's), same buckets (dapt: ring of messages)",
    "bucketedReduceScatterBusGBps", "bucketed_reduce_scatter_bus_gbps", "GB/s bus", "mpi4py Ireduce_scatter ")
row("exchange 2 ranks x 256 MiB (dapt: 1 KiB records, checked; pyzmq: 256 KiB messages, unchecked)",
    "throughputMBps", "zmq_aggregate_mbps", "MB/s aggregate", "pyzmq ")
print(f"sgemm under 2 ranks x 1 thread: dapt {statistics.median(a['sgemmGFLOPs'] for a in d):.1f}, "
      f"numpy {statistics.median(b['sgemm_gflops'][0] for b in p):.1f} GFLOP/s (rank 0, medians)")
PY
