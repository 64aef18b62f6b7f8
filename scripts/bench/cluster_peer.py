"""Peers for scripts/bench/cluster.sh, on the same sizes and thread counts as
`dapt cluster check`: NumPy matmul (sgemm), mpi4py all-reduce, and pyzmq
PUSH/PULL all-to-all streaming. Run under mpirun with 2 ranks; prints JSON
from rank 0."""
import json
import sys
import threading
import time

import numpy as np
import zmq
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
args = dict(a.split("=") for a in sys.argv[1:])
gemm = int(args.get("gemm", 1024))
allreduce_mib = float(args.get("allreduce_mib", 16))
stream_mib = float(args.get("stream_mib", 64))
message_bytes = int(args.get("message_bytes", 262144))
out = {}

# sgemm: best of three after a warm-up, float32, same size as dapt's.
a = (np.arange(gemm * gemm) % 17 - 8).astype(np.float32).reshape(gemm, gemm) / 8
b = (np.arange(gemm * gemm) % 13 - 6).astype(np.float32).reshape(gemm, gemm) / 6
a @ b
best = min(timed for timed in (
    (lambda t0: (a @ b, time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(3)))
out["sgemm_gflops"] = comm.gather(2 * gemm ** 3 / best / 1e9, root=0)

def per_call_seconds(reduce):
    """One warm-up call, then 10 timed ones: the slowest rank's seconds per call."""
    reduce()
    comm.Barrier()
    t0 = time.perf_counter()
    for _ in range(10):
        reduce()
    return comm.allreduce((time.perf_counter() - t0) / 10, op=MPI.MAX)

# All-reduce: in-place float sums.
buf = np.ones(int(allreduce_mib * 1048576) // 4, dtype=np.float32)
factor = 2 * (size - 1) / size if size > 1 else 1
per_call = per_call_seconds(lambda: comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM))
out["allreduce_ms"] = per_call * 1e3
out["allreduce_bus_gbps"] = buf.nbytes * factor / per_call / 1e9

# The same floats in bucket_mib buckets of in-place Iallreduce, all started
# before the first is waited for (as dapt's gradient reducer runs them).
bucket = int(float(args.get("bucket_mib", 4)) * 1048576) // 4
per_call = per_call_seconds(lambda: MPI.Request.Waitall(
    [comm.Iallreduce(MPI.IN_PLACE, buf[i:i + bucket], op=MPI.SUM) for i in range(0, buf.size, bucket)]))
out["bucketed_allreduce_ms"] = per_call * 1e3
out["bucketed_allreduce_bus_gbps"] = buf.nbytes * factor / per_call / 1e9

# ZeRO-1's form: an Ireduce_scatter per bucket, block r of each (nearly equal blocks) to rank r.
received = np.zeros_like(buf)
def scattered():
    requests = []
    for i in range(0, buf.size, bucket):
        n = min(bucket, buf.size - i)
        counts = [n // size + (1 if r < n % size else 0) for r in range(size)]
        requests.append(comm.Ireduce_scatter(buf[i:i + n], received[i:i + counts[rank]], counts, op=MPI.SUM))
    MPI.Request.Waitall(requests)
per_call = per_call_seconds(scattered)
out["bucketed_reduce_scatter_ms"] = per_call * 1e3
out["bucketed_reduce_scatter_bus_gbps"] = buf.nbytes * factor / 2 / per_call / 1e9

# ZeroMQ: every rank binds a PULL socket on loopback, connects a PUSH socket
# to each peer and streams stream_mib MiB split evenly over the peers in
# message_bytes messages, while a thread receives.
ctx = zmq.Context()
pull = ctx.socket(zmq.PULL)
pull.setsockopt(zmq.RCVHWM, 64)
port = pull.bind_to_random_port("tcp://127.0.0.1")
ports = comm.allgather(port)
pushes = {}
for peer in range(size):
    if peer != rank:
        s = ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.SNDHWM, 64)
        s.connect(f"tcp://127.0.0.1:{ports[peer]}")
        pushes[peer] = s
peers = list(pushes)
per_peer = int(stream_mib * 1048576) // max(1, len(peers)) // message_bytes
expected = per_peer * len(peers)  # messages arriving here (symmetric pattern)
received = [0]

def receive():
    for _ in range(expected):
        received[0] += len(pull.recv(copy=False))

payload = bytes([0xA5]) * message_bytes
comm.Barrier()
t0 = time.perf_counter()
receiver = threading.Thread(target=receive)
receiver.start()
for _ in range(per_peer):
    for peer in peers:
        pushes[peer].send(payload, copy=False)
receiver.join()
comm.Barrier()
elapsed = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
total = comm.allreduce(received[0], op=MPI.SUM)
out["zmq_aggregate_mbps"] = total / elapsed / 1e6
for s in pushes.values():
    s.close(linger=1000)
pull.close()
ctx.term()
if rank == 0:
    print(json.dumps(out))
