#!/usr/bin/env python3
"""Helpers of scripts/bench/filter.sh.

  filter_noise.py make CORPUS.jsonl REF.jsonl EVAL.jsonl [--reference N] [--clean N] [--per-kind N]
      Splits a clean corpus into a slice that trains the reference model and
      an evaluation corpus of other clean records plus injected noise of
      known kinds, each record labelled with `kind`.
  filter_noise.py quality OUT_DIR
      Precision and recall of removal per kind, and of clean text kept,
      from a `dapt filter` output folder (kept.jsonl and removed.jsonl keep `kind`).
  filter_noise.py peer MODEL_DIR EVAL.jsonl THREADS BATCH WINDOW
      transformers (PyTorch CPU) scoring of the same token windows as dapt
      filter (no BOS; records cut into WINDOW-token windows overlapping by a
      quarter, each window after the first scoring only its tokens past the
      overlap, so every token after a record's first is scored once), BATCH
      windows per forward, longest first, padded. Prints: scored tokens,
      tokens/s of tokenising and scoring, tokens/s of scoring alone.
"""
import json, os, random, sys, time

KINDS = ["random_bytes", "shuffled", "mojibake", "digits", "boilerplate"]
BOILERPLATE = ("All rights reserved. This document and the information contained herein is provided on an "
               "\"AS IS\" basis. Copyright the applicant. ")

def noise(kind, text, rng):
    if kind == "random_bytes":
        return bytes(rng.randrange(256) for _ in range(len(text.encode()))).decode("utf-8", errors="replace")
    if kind == "shuffled":
        chars = list(text); rng.shuffle(chars); return "".join(chars)
    if kind == "mojibake":
        raw = text.encode("utf-8")
        return raw.decode("gbk", errors="replace") if rng.random() < 0.5 else raw.decode("latin-1")
    if kind == "digits":
        rows = []
        while sum(len(r) for r in rows) < len(text):
            if rng.random() < 0.5:
                rows.append("".join(rng.choice("0123456789") for _ in range(rng.randrange(20, 80))))
            else:
                rows.append("| " + " | ".join(f"{rng.uniform(0, 1000):.{rng.randrange(0, 4)}f}" for _ in range(rng.randrange(3, 8))) + " |")
        return "\n".join(rows)
    if kind == "boilerplate":
        return BOILERPLATE * max(2, len(text) // len(BOILERPLATE))
    raise ValueError(kind)

def make(corpus, ref_path, eval_path, reference=1500, clean=600, per_kind=30):
    rng = random.Random(7)
    texts = [json.loads(l)["text"] for l in open(corpus, encoding="utf-8") if l.strip()]
    texts = [t for t in texts if len(t) >= 40]
    assert len(texts) >= reference + clean + per_kind * len(KINDS), len(texts)
    with open(ref_path, "w", encoding="utf-8") as f:
        for t in texts[:reference]:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    rest = texts[reference:]
    records = [{"text": t, "kind": "clean"} for t in rest[:clean]]
    sources = rest[clean:]
    for k, kind in enumerate(KINDS):
        for i in range(per_kind):
            records.append({"text": noise(kind, sources[k * per_kind + i], rng), "kind": kind})
    rng.shuffle(records)
    with open(eval_path, "w", encoding="utf-8") as f:
        for i, r in enumerate(records):
            f.write(json.dumps({"id": i, **r}, ensure_ascii=False) + "\n")

def quality(out):
    def kinds(name):
        return [json.loads(l)["kind"] for l in open(os.path.join(out, name), encoding="utf-8") if l.strip()]
    kept, removed = kinds("kept.jsonl"), kinds("removed.jsonl")
    noisy_removed = sum(k != "clean" for k in removed)
    print(f"removed {len(removed)} of {len(kept) + len(removed)}: precision of removal (noise among removed) "
          f"{noisy_removed / max(len(removed), 1):.3f}")
    for kind in KINDS:
        n = kept.count(kind) + removed.count(kind)
        r = removed.count(kind)
        print(f"  {kind:13s} recall {r / max(n, 1):.3f} ({r}/{n} removed)")
    n_clean = kept.count("clean") + removed.count("clean")
    clean_kept = kept.count("clean")
    print(f"  clean         kept {clean_kept / max(n_clean, 1):.3f} ({clean_kept}/{n_clean}); "
          f"precision of keeping (clean among kept) {clean_kept / max(len(kept), 1):.3f}")

def windows(ids, window, overlap):
    """The pieces of dapt's ScoringPlan: (tokens, first scored position)."""
    pieces, start = [], 0
    while True:
        length = min(window, len(ids) - start)
        pieces.append((ids[start:start + length], 1 if start == 0 else overlap))
        if start + length >= len(ids):
            return pieces
        start += window - overlap

def peer(model_dir, eval_path, threads, batch, window):
    import torch
    import torch.nn.functional as F
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM
    torch.set_num_threads(int(threads))
    batch, window = int(batch), int(window)
    overlap = window // 4
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    model = LlamaForCausalLM.from_pretrained(model_dir).eval()
    texts = [json.loads(l)["text"] for l in open(eval_path, encoding="utf-8") if l.strip()]
    started = time.perf_counter()
    ids = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    pieces = [p for i in ids if len(i) >= 2 for p in windows(i, window, overlap)]
    pieces.sort(key=lambda p: len(p[0]), reverse=True)
    scoring_started = time.perf_counter()
    scored, total = 0, 0.0
    with torch.no_grad():
        for b in range(0, len(pieces), batch):
            group = pieces[b:b + batch]
            n = max(len(g) for g, _ in group)
            x = torch.zeros(len(group), n, dtype=torch.long)
            mask = torch.zeros(len(group), n, dtype=torch.long)
            targets = torch.full((len(group), n - 1), -100, dtype=torch.long)
            for r, (g, first) in enumerate(group):
                x[r, :len(g)] = torch.tensor(g); mask[r, :len(g)] = 1
                targets[r, first - 1:len(g) - 1] = x[r, first:len(g)]
            logits = model(input_ids=x, attention_mask=mask).logits
            losses = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none")
            total += float(losses.sum())
            scored += int((targets != -100).sum())
    ended = time.perf_counter()
    print(f"{scored} {scored / (ended - started):.0f} {scored / (ended - scoring_started):.0f}")

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make":
        opts = dict(zip(args[3::2], args[4::2]))
        unknown = set(opts) - {"--reference", "--clean", "--per-kind"}
        if unknown or len(args[3:]) % 2:
            sys.exit(f"make: unknown or incomplete options {args[3:]}\n{__doc__}")
        make(*args[:3], reference=int(opts.get("--reference", 1500)), clean=int(opts.get("--clean", 600)),
             per_kind=int(opts.get("--per-kind", 30)))
    elif cmd == "quality":
        quality(*args)
    elif cmd == "peer":
        peer(*args)
    else:
        sys.exit(__doc__)
