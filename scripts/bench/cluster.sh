#!/usr/bin/env bash
# Cluster runtime figures, dapt against peers on the same sizes and threads:
#   sgemm         dapt (OpenBLAS) vs NumPy matmul        1 rank, 1 and 2 threads
#   all-reduce    dapt (Open MPI) vs mpi4py              2 ranks, 16 MiB float sum
#   exchange      dapt (ZeroMQ, 1 KiB records batched)   2 ranks
#                 vs pyzmq PUSH/PULL of pre-batched 256 KiB messages (the raw transport)
# Usage: scripts/bench/cluster.sh
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

"${mpi[@]}" -np 2 -x OPENBLAS_NUM_THREADS=1 "$dapt" cluster check --gemm 1024 --exchange-mib 16 --throughput-mib 256 \
  --record-bytes 1024 --allreduce-mib 16 --json "$tmp/two" > "$tmp/dapt.txt"
"${mpi[@]}" -np 2 -x OPENBLAS_NUM_THREADS=1 python3 scripts/bench/cluster_peer.py gemm=1024 allreduce_mib=16 \
  stream_mib=256 message_bytes=262144 > "$tmp/peer.json"
cat "$tmp/dapt.txt"
python3 - "$tmp/two.rank0" "$tmp/peer.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); p = json.load(open(sys.argv[2]))
print(f"all-reduce 16 MiB, 2 ranks: dapt {d['allReduceBusGBps']:.2f} GB/s bus, mpi4py {p['allreduce_bus_gbps']:.2f} GB/s, ratio {d['allReduceBusGBps']/p['allreduce_bus_gbps']:.2f}")
print(f"bucketed non-blocking all-reduce 16 MiB in 4 MiB buckets, 2 ranks: dapt (ring of messages) {d['bucketedAllReduceBusGBps']:.2f} GB/s bus, "
      f"mpi4py Iallreduce {p['bucketed_allreduce_bus_gbps']:.2f} GB/s, ratio {d['bucketedAllReduceBusGBps']/p['bucketed_allreduce_bus_gbps']:.2f}")
print(f"bucketed non-blocking reduce-scatter (ZeRO-1's), same buckets: dapt (ring of messages) {d['bucketedReduceScatterBusGBps']:.2f} GB/s bus, "
      f"mpi4py Ireduce_scatter {p['bucketed_reduce_scatter_bus_gbps']:.2f} GB/s, ratio {d['bucketedReduceScatterBusGBps']/p['bucketed_reduce_scatter_bus_gbps']:.2f}")
print(f"exchange 2 ranks x 256 MiB: dapt {d['throughputMBps']:.0f} MB/s aggregate (1 KiB records, checked), "
      f"pyzmq {p['zmq_aggregate_mbps']:.0f} MB/s (256 KiB messages, unchecked), ratio {d['throughputMBps']/p['zmq_aggregate_mbps']:.2f}")
print(f"sgemm under 2 ranks x 1 thread: dapt {d['sgemmGFLOPs']:.1f}, numpy {p['sgemm_gflops'][0]:.1f} GFLOP/s (rank 0)")
PY
