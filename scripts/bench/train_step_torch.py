#!/usr/bin/env python3
"""PyTorch peer of `dapt bench train-step`: the same Llama config (transformers
LlamaForCausalLM, fp32, SDPA attention) and the same synthetic batch, forward +
backward, median step time. --checkpointing 1: transformers' gradient
checkpointing of every decoder layer (non-reentrant); with --checkpointing-layers N
only of the first N (as `pretrain.parallel.recompute_layers`). Prints one JSON line."""
import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    for name, default in [("vocab", 4096), ("hidden", 256), ("layers", 4), ("heads", 4), ("kv-heads", 0),
                          ("intermediate", 688), ("seq", 256), ("batch", 8), ("doc-length", 0),
                          ("steps", 10), ("warmup", 2), ("threads", 1), ("checkpointing", 0),
                          ("checkpointing-layers", 0)]:
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads,
                      num_key_value_heads=a.kv_heads or a.heads, max_position_embeddings=max(a.seq, 2048),
                      tie_word_embeddings=False, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).float()
    model.train()
    if a.checkpointing:
        model.config.use_cache = False
        # transformers 5 names it activation checkpointing; older releases, gradient checkpointing.
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if a.checkpointing_layers:
            # Each decoder layer checks its own flag on every call.
            for layer in model.model.layers[a.checkpointing_layers:]:
                layer.gradient_checkpointing = False

    B, T, V = a.batch, a.seq, a.vocab
    n = B * T
    idx = torch.arange(n)
    tokens = ((idx * 7919 + 13) % V).reshape(B, T)
    targets = torch.full((B, T), -100, dtype=torch.long)
    targets[:, :-1] = tokens[:, 1:]
    pos = torch.arange(T).repeat(B, 1)
    mask = None
    if a.doc_length:
        doc = (torch.arange(T) // a.doc_length).repeat(B, 1)
        targets[:, :-1][doc[:, :-1] != doc[:, 1:]] = -100
        pos = pos - (doc * a.doc_length)
        same = doc[:, :, None] == doc[:, None, :]
        mask = (same & torch.tril(torch.ones(T, T, dtype=torch.bool))[None])[:, None]  # True = attend
        visible = (pos + 1).sum().item()
    else:
        visible = (pos + 1).sum().item()

    h, i = a.hidden, a.intermediate
    q_dim = a.hidden
    kv_dim = (a.kv_heads or a.heads) * (a.hidden // a.heads)
    per_layer = h * q_dim * 2 + h * kv_dim * 2 + 3 * h * i
    flops = 6 * (a.layers * per_layer + V * h) * n + 12 * q_dim * visible * a.layers

    times, loss = [], 0.0
    for step in range(a.warmup + a.steps):
        start = time.perf_counter()
        model.zero_grad(set_to_none=False)
        logits = model(input_ids=tokens, attention_mask=mask, position_ids=pos).logits
        loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100)
        loss.backward()
        if step >= a.warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    k = len(times)
    median = times[k // 2] if k % 2 else (times[k // 2 - 1] + times[k // 2]) / 2
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": "torch", "tokens_per_s": round(n / median, 1), "gflops": round(flops / median / 1e9, 2),
                      "step_s": round(median, 4), "peak_rss_mb": round(rss, 1), "loss": round(loss.item(), 5),
                      "threads": a.threads}))


if __name__ == "__main__":
    main()
