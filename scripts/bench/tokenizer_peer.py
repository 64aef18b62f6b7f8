#!/usr/bin/env python3
"""The Hugging Face `tokenizers` side of scripts/bench/tokenizer.sh.

  train CORPUS VOCAB OUT.json      train a byte-level BPE (same pre-tokenizer
                                   pattern and special tokens as dapt) and time it
  encode TOKENIZER.json CORPUS     time encoding the corpus texts (threads from
        [--ids IDS.txt]            RAYON_NUM_THREADS); with --ids, compare with dapt's ids
  ratio CORPUS TOKENIZER.json...   tokens per character by document language
"""
import json, os, sys, time

SPECIAL = ["<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
DAPT_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|\p{Han}+|[^\r\n\p{L}\p{N}]?[\p{L}&&[^\p{Han}]]+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

def texts(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]

def train(corpus, vocab, out):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, Regex
    t0 = time.perf_counter()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(DAPT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=int(vocab), min_frequency=2, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts(corpus), trainer=trainer)
    tok.save(out)
    print(f"tokenizers: trained vocabulary {tok.get_vocab_size()} in {time.perf_counter() - t0:.2f} s")

def encode(tokenizer, corpus, ids_path=None):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer)
    data = list(texts(corpus))
    size = sum(len(t.encode("utf-8")) for t in data)
    threads = int(os.environ.get("RAYON_NUM_THREADS", "1"))
    t0, c0 = time.perf_counter(), time.thread_time()
    if threads == 1:
        out = [tok.encode(t, add_special_tokens=False).ids for t in data]
    else:
        out = [e.ids for e in tok.encode_batch(data, add_special_tokens=False)]
    dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
    cpu_part = f"; CPU time {cpu:.3f} s: {size / 1e6 / cpu:.2f} MB/s per CPU second" if threads == 1 else ""
    print(f"tokenizers: encoded {len(data)} texts, {size / 1e6:.2f} MB, {sum(map(len, out))} tokens in {dt:.3f} s: {size / 1e6 / dt:.2f} MB/s ({threads} thread{'s' if threads > 1 else ''}){cpu_part}")
    if ids_path:
        theirs = [list(map(int, l.split())) for l in open(ids_path)]
        bad = [i for i, (a, b) in enumerate(zip(out, theirs)) if a != b]
        if len(theirs) != len(out) or bad:
            print(f"tokenizers: ids DIFFER from dapt on {len(bad)} of {len(out)} texts (first: {bad[:5]})")
            sys.exit(1)
        print(f"tokenizers: ids identical to dapt's on all {len(out)} texts")

def is_han(c):
    v = ord(c)
    return 0x3400 <= v <= 0x4DBF or 0x4E00 <= v <= 0x9FFF or 0xF900 <= v <= 0xFAFF or 0x20000 <= v <= 0x323AF

def ratio(corpus, *tokenizers):
    from tokenizers import Tokenizer
    data = list(texts(corpus))
    for path in tokenizers:
        tok = Tokenizer.from_file(path)
        stats = {}
        for t in data:
            han = sum(1 for c in t if is_han(c)); latin = sum(1 for c in t if c.isascii() and c.isalpha())
            lang = "zh" if han > 0 and han >= latin else ("en" if latin > 0 else "other")
            s = stats.setdefault(lang, [0, 0, 0])
            s[0] += len(t); s[1] += han; s[2] += len(tok.encode(t, add_special_tokens=False).ids)
        parts = [f"{k}: {v[2]} tokens, {v[2] / v[0]:.3f} tokens/char" + (f", {v[2] / v[1]:.3f} tokens/Han char" if k == "zh" else "") for k, v in sorted(stats.items())]
        print(f"{os.path.basename(path)}: " + "; ".join(parts))

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "train": train(*args)
    elif cmd == "encode": encode(args[0], args[1], args[3] if len(args) > 3 and args[2] == "--ids" else None)
    elif cmd == "ratio": ratio(*args)
    else: sys.exit(__doc__)
