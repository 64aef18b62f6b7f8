#!/usr/bin/env python3
"""PyTorch peer for scripts/bench/train.sh.

  train_peer.py steps SHARDS THREADS STEPS
      Trains transformers' LlamaForCausalLM with torch.optim.AdamW (betas
      0.9/0.95, eps 1e-8, wd 0.1 off norms, clipping 1.0) on consecutive
      2048-token batches (8 x 256) of the shard tokens; prints the median
      tokens/s of steps 3..STEPS.
  train_peer.py checkpoint DIR BYTES CHECKPOINT
      Prints: raw write+fsync seconds for BYTES, then PyTorch's save and load
      seconds for the checkpoint's model and optimizer state.
"""
import json, os, statistics, sys, time
import numpy as np
import torch

def steps(shards, threads, n):
    torch.set_num_threads(threads)
    from transformers import LlamaConfig, LlamaForCausalLM
    manifest = json.load(open(os.path.join(shards, "manifest.json")))
    dtype = np.uint16 if manifest["token_bytes"] == 2 else np.uint32
    tokens = np.concatenate([np.fromfile(os.path.join(shards, s["name"] + ".tokens"), dtype=dtype) for s in manifest["shards"]]).astype(np.int64)
    config = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                         tie_word_embeddings=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).train()
    decay = [p for name, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for name, p in model.named_parameters() if p.dim() == 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    B, T = 8, 256
    rates = []
    for step in range(n):
        start = step * B * T
        x = torch.from_numpy(tokens[start:start + B * T + 1])
        inputs, labels = x[:-1].view(B, T), x[1:].view(B, T)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, config.vocab_size), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        rates.append(B * T / (time.perf_counter() - t))
    print(statistics.median(rates[2:]))

def checkpoint(directory, nbytes, ckpt):
    path = os.path.join(directory, "raw.bin")
    data = os.urandom(1 << 20)
    t = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    left = nbytes
    while left > 0:
        left -= os.write(fd, data[:min(left, len(data))])
    os.fsync(fd); os.close(fd)
    raw = time.perf_counter() - t
    os.remove(path)
    from safetensors.torch import load_file, save_file
    model = load_file(os.path.join(ckpt, "model.safetensors"))
    moments = load_file(os.path.join(ckpt, "optimizer.safetensors"))
    out = os.path.join(directory, "torch-ckpt"); os.makedirs(out, exist_ok=True)
    t = time.perf_counter()
    save_file(model, os.path.join(out, "model.safetensors"))
    torch.save(moments, os.path.join(out, "optimizer.pt"))
    for name in os.listdir(out):
        fd = os.open(os.path.join(out, name), os.O_RDONLY); os.fsync(fd); os.close(fd)
    save = time.perf_counter() - t
    t = time.perf_counter()
    load_file(os.path.join(out, "model.safetensors")); torch.load(os.path.join(out, "optimizer.pt"))
    load = time.perf_counter() - t
    print(raw, save, load)

if __name__ == "__main__":
    if sys.argv[1] == "steps":
        steps(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        checkpoint(sys.argv[2], int(sys.argv[3]), sys.argv[4])
