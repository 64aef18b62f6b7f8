#!/usr/bin/env python3
"""Peer of `dapt bench generate`: transformers' greedy `generate` (KV cache, fp32,
default attention) on the same model directory and the same synthetic prompts
(token t of prompt b is (b*131 + t*7919 + 13) mod vocab). Prefill = one forward
pass over the prompts with a cache; decode = generate's time minus the prefill.
Prints one JSON line. Also: --make-model DIR writes a random tiny model."""
import argparse, json, os, statistics, time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--make-model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-length", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.make_model:
        # The pretrain-tiny shape (configs/pretrain-tiny.yaml) with a 2048-token vocabulary.
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=2048, hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                          rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False)
        LlamaForCausalLM(cfg).float().save_pretrained(a.make_model, safe_serialization=True)
        return
    model = LlamaForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32).eval()
    V = model.config.vocab_size
    ids = torch.tensor([[(b * 131 + t * 7919 + 13) % V for t in range(a.prompt_length)] for b in range(a.batch)])
    mask = torch.ones_like(ids)
    prefill, total = [], []
    with torch.inference_mode():
        for run in range(a.repeats + 1):
            t0 = time.perf_counter()
            model(input_ids=ids, attention_mask=mask, use_cache=True)
            t1 = time.perf_counter()
            model.generate(ids, attention_mask=mask, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                           do_sample=False, num_beams=1, pad_token_id=0)
            t2 = time.perf_counter()
            if run > 0:
                prefill.append(t1 - t0)
                total.append(t2 - t1)
    p, g = statistics.median(prefill), statistics.median(total)
    d = g - p
    print(json.dumps({"impl": "transformers", "prefill_tokens_per_s": a.batch * a.prompt_length / p,
                      "decode_tokens_per_s": a.batch * a.new_tokens / d, "step_ms": d / a.new_tokens * 1000,
                      "prefill_s": p, "decode_s": d}))


if __name__ == "__main__":
    main()
