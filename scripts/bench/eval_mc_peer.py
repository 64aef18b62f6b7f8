#!/usr/bin/env python3
"""Peer for `dapt eval mc`: the same items scored by lm-evaluation-harness'
HFLM.loglikelihood (its own encoding of context/continuation pairs, batching
and log-softmax) on the same model and tokenizer.

The requests are built here from the CSV files with lm-evaluation-harness'
MMLU template (its tasks/mmlu/default/_default_template_yaml: description
"The following are multiple choice questions (with answers) about SUBJECT.\\n\\n",
doc_to_text "QUESTION\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:", choices " A".." D",
few-shot: the first k dev items, "\\n\\n" between them); C-Eval with C-Eval's own
header "以下是中国关于SUBJECT考试的单项选择题，请选出其中的正确答案。\\n\\n" and "答案："
(lm-evaluation-harness' ceval task names the subject without "考试"). The
tasks themselves are not used: they download their data sets.

Usage: eval_mc_peer.py MODEL_DIR INPUT_DIR SHOTS OUT.jsonl
Prints one JSON line: accuracy, items, seconds (loading and scoring).
"""
import csv, glob, json, os, sys, time

t0 = time.time()
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

model_dir, input_dir, shots, out_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(int(os.environ.get("PEER_THREADS", "1")))
LETTERS = ["A", "B", "C", "D"]

def rows(path):
    with open(path, encoding="utf-8-sig", newline="") as f:
        records = list(csv.reader(f))
    if records and records[0][:7] == ["id", "question", "A", "B", "C", "D", "answer"]:
        return "ceval", [r[1:7] for r in records[1:]]
    return "mmlu", [r[:6] for r in records]

files = sorted(glob.glob(os.path.join(input_dir, "*_val.csv"))) or sorted(glob.glob(os.path.join(input_dir, "*_test.csv")))
mapping_path = os.path.join(input_dir, "subject_mapping.json")
mapping = json.load(open(mapping_path, encoding="utf-8")) if os.path.exists(mapping_path) else {}

def question(r, fmt):
    text = r[0].strip()
    for letter, choice in zip(LETTERS, r[1:5]):
        text += f"\n{letter}. {choice}"
    return text + ("\nAnswer:" if fmt == "mmlu" else "\n答案：")

items, requests = [], []
for path in files:
    subject = os.path.basename(path).rsplit("_", 1)[0]
    fmt, test = rows(path)
    _, dev = rows(path.rsplit("_", 1)[0] + "_dev.csv") if shots else (fmt, [])
    name = mapping.get(subject, [None, subject.replace("_", " ")])[1] if fmt == "ceval" else subject.replace("_", " ")
    head = (f"The following are multiple choice questions (with answers) about {name}.\n\n" if fmt == "mmlu"
            else f"以下是中国关于{name}考试的单项选择题，请选出其中的正确答案。\n\n")
    examples = "".join(question(d, fmt) + " " + d[5] + "\n\n" for d in dev[:shots])
    for r in test:
        context = head + examples + question(r, fmt)
        items.append({"subject": subject, "answer": r[5].strip()})
        for letter in LETTERS:
            requests.append(Instance(request_type="loglikelihood", doc={}, arguments=(context, " " + letter), idx=len(requests)))

tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"),
                                    bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>")
model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=int(os.environ.get("PEER_BATCH", "4")), device="cpu")
t1 = time.time()
results = lm.loglikelihood(requests, disable_tqdm=True)
t2 = time.time()

correct = 0
with open(out_path, "w", encoding="utf-8") as f:
    for k, item in enumerate(items):
        lls = [results[4 * k + j][0] for j in range(4)]
        pick = LETTERS[max(range(4), key=lambda j: (lls[j], -j))]
        correct += pick == item["answer"]
        f.write(json.dumps({**item, "pick": pick, "loglikelihoods": lls}, ensure_ascii=False) + "\n")
print(json.dumps({"accuracy": correct / len(items), "items": len(items), "seconds": t2 - t0, "scoring_seconds": t2 - t1}))
