"""xgrammar side of scripts/bench/grammar.sh, and the vocabulary/ids helpers.

  grammar_peer.py train CORPUS.jsonl... --vocab-size N --output tokenizer.json
      byte-level BPE (GPT-2 pre-tokenizer) trained with `tokenizers` on the records' text
  grammar_peer.py run --tokenizer T [--schema S] --text OUT.json --ids-out IDS.json [--max-whitespace 4]
      encodes the text with the same tokenizer.json, writes the ids for dapt, then times
      xgrammar: schema compile, and fill_next_token_bitmask per token over the ids
      (pass 1 on a fresh matcher, later passes on new matchers of the same compiled grammar);
      first_total_ms is the compile plus every mask of the first pass.
"""
import argparse, json, sys, time


def train(args):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    texts = []
    for path in args.corpus:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    rec = json.loads(line)
                    texts.append(rec.get("text") or json.dumps(rec, ensure_ascii=False))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, min_frequency=1, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.save(args.output)
    print(f"trained {tok.get_vocab_size()} tokens on {len(texts)} records ({sum(len(t) for t in texts)} characters)")


def run(args):
    import torch
    import xgrammar as xgr
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(args.tokenizer)
    vocab = tok.get_vocab(with_added_tokens=True)
    size = max(vocab.values()) + 1
    encoded = [""] * size
    for s, i in vocab.items():
        encoded[i] = s
    eos = tok.token_to_id("<|eos|>")
    info = xgr.TokenizerInfo(encoded, xgr.VocabType.BYTE_LEVEL, vocab_size=size, stop_token_ids=[eos])
    text = open(args.text, encoding="utf-8").read().strip()
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == text, "the ids must spell the text exactly"
    with open(args.ids_out, "w") as f:
        json.dump(ids, f)
    compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
    start = time.perf_counter()
    if args.schema:
        compiled = compiler.compile_json_schema(open(args.schema).read(), any_whitespace=True, max_whitespace_cnt=args.max_whitespace)
    else:
        compiled = compiler.compile_builtin_json_grammar()
    compile_s = time.perf_counter() - start
    bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)
    per_pass = []
    first_total_s = 0.0
    for _ in range(args.passes):
        matcher = xgr.GrammarMatcher(compiled)
        total = 0.0
        for t in ids:
            start = time.perf_counter()
            matcher.fill_next_token_bitmask(bitmask)
            total += time.perf_counter() - start
            assert (int(bitmask[0, t // 32]) >> (t % 32)) & 1, f"xgrammar refuses token {t}"
            assert matcher.accept_token(t)
        assert matcher.accept_token(eos), "the ids must make a complete value"
        if not per_pass:
            first_total_s = total
        per_pass.append(total / len(ids) * 1e6)
    print(json.dumps({"impl": "xgrammar", "vocab": size, "tokens": len(ids), "compile_ms": round(compile_s * 1e3, 3),
                      "mask_us_first": round(per_pass[0], 2), "mask_us_later": round(per_pass[min(1, len(per_pass) - 1)], 2),
                      "first_total_ms": round((compile_s + first_total_s) * 1e3, 3)}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("corpus", nargs="+")
    t.add_argument("--vocab-size", type=int, default=32000)
    t.add_argument("--output", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tokenizer", required=True)
    r.add_argument("--schema")
    r.add_argument("--text", required=True)
    r.add_argument("--ids-out", required=True)
    r.add_argument("--passes", type=int, default=3)
    r.add_argument("--max-whitespace", type=int, default=4)
    args = ap.parse_args()
    train(args) if args.cmd == "train" else run(args)


if __name__ == "__main__":
    main()
