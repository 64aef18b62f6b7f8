#!/usr/bin/env python3
"""PyTorch DistributedDataParallel peer for scripts/bench/parallel.sh.

  torchrun --nproc_per_node N parallel_ddp.py SHARDS CONFIG.json GLOBAL_BATCH SEQ MICRO_BATCH STEPS

Trains transformers' LlamaForCausalLM (the config.json's shape, fp32, SDPA
attention) with DDP over gloo on CPU, one thread per process: each of the N
ranks takes its contiguous share of every global batch of consecutive
SEQ-token sequences of the shard tokens, in micro-batches of MICRO_BATCH with
gradient accumulation (no_sync except on the last), then clipping at 1.0 and
AdamW (betas 0.9/0.95, eps 1e-8, wd 0.1 off norms). Rank 0 prints one line:
the median tokens/s (global batch tokens / step time) of steps 3..STEPS, then
each of those steps' tokens/s.
"""
import json, os, statistics, sys, time
import numpy as np
import torch
import torch.distributed as dist

def main(shards, config_path, global_batch, seq, micro, steps):
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    from transformers import LlamaConfig, LlamaForCausalLM
    shape = json.load(open(config_path))
    config = LlamaConfig(vocab_size=shape["vocab_size"], hidden_size=shape["hidden_size"],
                         intermediate_size=shape["intermediate_size"], num_hidden_layers=shape["num_hidden_layers"],
                         num_attention_heads=shape["num_attention_heads"], num_key_value_heads=shape["num_key_value_heads"],
                         max_position_embeddings=max(2048, seq), tie_word_embeddings=False, attn_implementation="sdpa")
    manifest = json.load(open(os.path.join(shards, "manifest.json")))
    dtype = np.uint16 if manifest["token_bytes"] == 2 else np.uint32
    tokens = np.concatenate([np.fromfile(os.path.join(shards, s["name"] + ".tokens"), dtype=dtype)
                             for s in manifest["shards"]]).astype(np.int64)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(LlamaForCausalLM(config).train())
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() == 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    share = range(rank * global_batch // world, (rank + 1) * global_batch // world)
    pieces = [share[i:i + micro] for i in range(0, len(share), micro)]
    per_epoch = (len(tokens) - 1) // seq
    rates = []
    for step in range(steps):
        dist.barrier()
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        for i, piece in enumerate(pieces):
            rows = [(step * global_batch + s) % per_epoch for s in piece]
            x = torch.from_numpy(np.stack([tokens[r * seq:r * seq + seq + 1] for r in rows]))
            inputs, labels = x[:, :-1], x[:, 1:]
            last = i == len(pieces) - 1
            ctx = model.no_sync() if not last else torch.enable_grad()
            with ctx:
                logits = model(input_ids=inputs).logits
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, config.vocab_size), labels.reshape(-1),
                                                         reduction="sum") / (global_batch * seq / world)
                loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dist.barrier()
        rates.append(global_batch * seq / (time.perf_counter() - t))
    if rank == 0:
        print(statistics.median(rates[2:]), " ".join("%.1f" % r for r in rates[2:]))
    dist.destroy_process_group()

if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), int(a[5]))
