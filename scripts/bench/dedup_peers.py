#!/usr/bin/env python3
"""Python peers of `dapt dedup` and the accuracy evaluation of scripts/bench/dedup.sh.

  run PEER CORPUS OUT      PEER is datasketch or rensa: MinHash (num_perm 128)
                           of the same 5-character shingles dapt uses
                           (dedup_text.py), an LSH index at the same
                           threshold, every record queried, candidates kept
                           when their estimated Jaccard reaches the threshold.
                           Writes the pairs (JSONL a, b) to OUT and prints
                           one JSON line of timings and peak RSS.
  evaluate CORPUS LABELS NAME=PAIRS...
                           Precision: share of predicted pairs whose exact
                           Jaccard reaches the threshold. Recall: share of the
                           labelled family pairs at or above the threshold
                           whose records end up connected by the predicted
                           pairs (the clusters a dedup would form).
"""
import argparse, json, os, resource, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dedup_text import shingles, jaccard  # noqa: E402


def read_corpus(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                yield rec["id"], rec["text"]


def run(peer, corpus, out, threshold, num_perm, bands):
    started = time.perf_counter()
    shingle_seconds = 0.0
    ids, sigs = [], []
    if peer == "datasketch":
        from datasketch import MinHash, MinHashLSH
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        chosen = f"{lsh.b}x{lsh.r}"
        for rid, text in read_corpus(corpus):
            t = time.perf_counter()
            sh = [s.encode("utf-8") for s in shingles(text)]
            shingle_seconds += time.perf_counter() - t
            m = MinHash(num_perm=num_perm, seed=42)
            m.update_batch(sh)
            lsh.insert(len(ids), m)
            ids.append(rid)
            sigs.append(m)
        estimate = lambda a, b: sigs[a].jaccard(sigs[b])
    else:
        from rensa import RMinHash, RMinHashLSH
        lsh = RMinHashLSH(threshold=threshold, num_perm=num_perm, num_bands=bands)
        chosen = f"{bands}x{num_perm // bands}"
        for rid, text in read_corpus(corpus):
            t = time.perf_counter()
            sh = list(shingles(text))
            shingle_seconds += time.perf_counter() - t
            m = RMinHash(num_perm=num_perm, seed=42)
            m.update(sh)
            lsh.insert(len(ids), m)
            ids.append(rid)
            sigs.append(m)
        estimate = lambda a, b: sigs[a].jaccard(sigs[b])
    indexed = time.perf_counter()
    pairs = set()
    candidates = 0
    for i, m in enumerate(sigs):
        for j in lsh.query(m):
            if j > i:
                candidates += 1
                if estimate(i, j) >= threshold:
                    pairs.add((i, j))
    finished = time.perf_counter()
    with open(out, "w") as f:
        for i, j in sorted(pairs):
            f.write(json.dumps({"a": ids[i], "b": ids[j]}) + "\n")
    print(json.dumps({
        "peer": peer, "records": len(ids), "bands_x_rows": chosen,
        "seconds": finished - started, "shingle_seconds": shingle_seconds,
        "minhash_lsh_seconds": finished - started - shingle_seconds,
        "candidates": candidates, "pairs": len(pairs),
        "cpu_seconds": resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


def evaluate(corpus, labels, threshold, predictions):
    texts = dict(read_corpus(corpus))
    cache = {}

    def sh(rid):
        s = cache.get(rid)
        if s is None:
            if len(cache) > 20000:
                cache.clear()
            s = cache[rid] = shingles(texts[rid])
        return s

    truth = []
    with open(labels) as f:
        for line in f:
            l = json.loads(line)
            if l["jaccard"] >= threshold:
                truth.append((l["a"], l["b"]))
    results = {}
    for name, path in predictions:
        pred = []
        with open(path) as f:
            for line in f:
                p = json.loads(line)
                pred.append((p["a"], p["b"]))
        pred.sort()
        correct = sum(1 for a, b in pred if jaccard(sh(a), sh(b)) >= threshold)
        parent = {}

        def find(x):
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x
        for a, b in pred:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[ra] = rb
        found = sum(1 for a, b in truth if find(a) == find(b))
        results[name] = {"predicted_pairs": len(pred), "precision": correct / len(pred) if pred else 1.0,
                         "true_pairs": len(truth), "recall": found / len(truth) if truth else 1.0}
        print(json.dumps({name: results[name]}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run")
    r.add_argument("peer", choices=["datasketch", "rensa"])
    r.add_argument("corpus")
    r.add_argument("out")
    e = sub.add_parser("evaluate")
    e.add_argument("corpus")
    e.add_argument("labels")
    e.add_argument("predictions", nargs="+", help="NAME=PAIRS.jsonl")
    for p in (r, e):
        p.add_argument("--threshold", type=float, default=0.85)
    r.add_argument("--num-perm", type=int, default=128)
    r.add_argument("--bands", type=int, default=16)
    args = ap.parse_args()
    if args.mode == "run":
        run(args.peer, args.corpus, args.out, args.threshold, args.num_perm, args.bands)
    else:
        evaluate(args.corpus, args.labels, args.threshold, [p.split("=", 1) for p in args.predictions])


if __name__ == "__main__":
    main()
