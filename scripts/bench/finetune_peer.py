#!/usr/bin/env python3
"""PEFT + transformers peer for scripts/bench/finetune.sh.

  finetune_peer.py BASE DATA THREADS STEPS
      LoRA (r 8, alpha 16, dropout 0.05, q/k/v/o_proj) over the Llama in BASE
      with torch.optim.AdamW (lr 2e-4, clipping 1.0), on 8 x 256-token
      batches of the chat examples in DATA rendered by BASE's chat template
      (tokenizer.json; the template written beside it by dapt) and packed
      back to back, the loss on assistant tokens only. Prints the median
      tokens/s of steps 3..STEPS and this process's max RSS in KiB.
"""
import json, os, re, resource, shutil, statistics, sys, tempfile, time
import torch

def main(base, data, threads, steps):
    torch.set_num_threads(threads)
    from transformers import AutoTokenizer, LlamaForCausalLM
    from peft import LoraConfig, get_peft_model
    # The chat template as dapt writes it into its checkpoints (tokenizer_config.json).
    work = tempfile.mkdtemp()
    shutil.copy(os.path.join(base, "tokenizer.json"), work)
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    src = open(os.path.join(repo, "Sources", "DaptTokenizer", "ChatTemplate.swift"), encoding="utf-8").read()
    template = re.search(r'public static let source = #"(.*?)"#\n', src).group(1)
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|bos|>", "eos_token": "<|eos|>",
               "pad_token": "<|pad|>", "chat_template": template}, open(os.path.join(work, "tokenizer_config.json"), "w"))
    tok = AutoTokenizer.from_pretrained(work)
    ids, mask = [], []
    for line in open(data, encoding="utf-8"):
        if line.strip():
            r = tok.apply_chat_template(json.loads(line)["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
            ids += list(r["input_ids"]); mask += list(r["assistant_masks"])
    model = LlamaForCausalLM.from_pretrained(base, torch_dtype=torch.float32, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    B, T = 8, 256
    ids_t, mask_t = torch.tensor(ids), torch.tensor(mask)
    rates = []
    for step in range(steps):
        start = (step * B * T) % (len(ids) - B * T - 1)
        x = ids_t[start:start + B * T + 1]
        m = mask_t[start + 1:start + B * T + 1]
        inputs = x[:-1].view(B, T)
        labels = torch.where(m == 1, x[1:], torch.full_like(m, -100)).view(B, T)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        rates.append(B * T / (time.perf_counter() - t))
    shutil.rmtree(work)
    print(statistics.median(rates[2:]), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
