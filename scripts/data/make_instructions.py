#!/usr/bin/env python3
"""The bundled instruction sample for `dapt finetune`: intent recognition over
the patents in data/sample, every answer one JSON object
{"intent": ..., "patent": ..., "fields": {...}}.

Each patent gives requests of several intents (publication date, title,
jurisdiction, its steps, one step, claim count, a topic search), phrased in its
language and sometimes the other; requests about nothing in the corpus are
answered {"intent": "other", "patent": null, "fields": {}}. The examples are
shuffled with --seed and split into train.jsonl and heldout.jsonl
(--heldout-fraction). --extra-json N also writes train+json.jsonl: train.jsonl
with N more requests whose answers are valid JSON of other shapes (nesting,
arrays, numbers, escapes, non-ASCII), mixed in — more valid-JSON answers being
the first remedy for a low JSON validity rate.

    python3 scripts/data/make_instructions.py [--seed 7] [--heldout-fraction 0.15] [--extra-json 150] [--output data/instructions]

Uses only the Python standard library. The same arguments give the same files.
"""
import argparse, json, os, random, re

root = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
SYSTEM = {
    "zh": "你是专利检索助手。识别用户请求的意图，只用一个 JSON 对象回答，键为 intent、patent、fields。",
    "en": "You are a patent assistant. Recognise the intent of the request and answer with one JSON object with the keys intent, patent and fields.",
}

def load_patents(sample):
    patents = []
    with open(os.path.join(sample, "patents.jsonl"), encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            d["body"] = d.get("text") or "\f".join(d.get("pages", []))
            patents.append(d)
    texts = os.path.join(sample, "texts")
    for name in sorted(os.listdir(texts)):
        raw = open(os.path.join(texts, name), encoding="utf-8").read()
        m = re.match(r"---\n(.*?)\n---\n(.*)", raw, re.S)
        meta = {k: v.strip().strip('"') for k, v in (line.split(": ", 1) for line in m.group(1).splitlines() if ": " in line)}
        meta["body"] = m.group(2)
        patents.append(meta)
    return patents

def steps_of(p):
    if p["lang"] == "zh":
        found = re.findall(r"步骤(S\d+)[：:]\s*([^，。；\n]*)", p["body"])
    else:
        found = re.findall(r"Step (S?\d+)[:.]\s*([^,.;\n]*)", p["body"])
    seen, out = set(), []
    for label, text in found:
        if label not in seen:
            seen.add(label); out.append((label, text.strip()))
    return out

def claim_count(p):
    return len(set(re.findall(r"(?m)^(\d+)\. ", p["body"])))

def answer(intent, patent, fields):
    return json.dumps({"intent": intent, "patent": patent, "fields": fields}, ensure_ascii=False)

ASK = {
    "query_pub_date": {"zh": ["{id} 是哪天公开的？", "请告诉我专利{id}的公开日期。", "查一下{id}的公开日"],
                       "en": ["When was {id} published?", "Publication date of {id}, please.", "What is the pub date of patent {id}?"]},
    "query_title": {"zh": ["{id} 的标题是什么？", "专利{id}叫什么名字？", "给出{id}的发明名称"],
                    "en": ["What is the title of {id}?", "Give me the title of patent {id}.", "Name of the invention in {id}?"]},
    "query_jurisdiction": {"zh": ["{id} 是哪个国家或地区的专利？", "专利{id}属于哪个受理局？"],
                           "en": ["Which office granted or published {id}?", "Jurisdiction of {id}?"]},
    "list_steps": {"zh": ["列出{id}方法的全部步骤编号。", "{id} 的方法包括哪些步骤？"],
                   "en": ["List the steps of the method in {id}.", "Which steps does {id} describe?"]},
    "query_step": {"zh": ["{id} 的步骤{step}做什么？", "说明专利{id}中步骤{step}的内容"],
                   "en": ["What happens in step {step} of {id}?", "Describe step {step} of patent {id}."]},
    "count_claims": {"zh": ["{id} 有几项权利要求？", "统计专利{id}的权利要求数量"],
                     "en": ["How many claims does {id} have?", "Count the claims of {id}."]},
    "search": {"zh": ["有没有关于{topic}的专利？", "帮我检索{topic}相关的专利"],
               "en": ["Find patents about {topic}.", "Are there patents on {topic}?"]},
}
OTHER = {"zh": ["今天天气怎么样？", "帮我写一首关于秋天的诗。", "你好", "把这句话翻译成英文：我喜欢读书。", "推荐一部电影", "现在几点了？"],
         "en": ["What's the weather like today?", "Tell me a joke.", "Hello!", "Translate into French: good morning.", "Recommend a book.", "What time is it?"]}

def topic_of(p):
    t = p["title"]
    if p["lang"] == "zh":
        return re.sub(r"^一种(基于|用于|面向)?", "", t).rstrip("方法及装置系统")
    return re.sub(r"^(Method|System|Apparatus)( and method)? (for|of) ", "", t)

def examples_for(p, rng):
    pid, lang = p["patent"], p["lang"]
    other = "en" if lang == "zh" else "zh"
    steps = steps_of(p)
    facts = {
        "query_pub_date": {"pub_date": p["pub_date"]},
        "query_title": {"title": p["title"]},
        "query_jurisdiction": {"jurisdiction": p["jurisdiction"]},
    }
    if steps:
        facts["list_steps"] = {"steps": [s for s, _ in steps]}
    n = claim_count(p)
    if n:
        facts["count_claims"] = {"claims": n}
    out = []
    for intent, fields in facts.items():
        for phrasing in rng.sample(ASK[intent][lang], 2):
            out.append((intent, lang, phrasing.format(id=pid), answer(intent, pid, fields)))
        out.append((intent, other, rng.choice(ASK[intent][other]).format(id=pid), answer(intent, pid, fields)))
    for label, text in rng.sample(steps, min(2, len(steps))):
        q = rng.choice(ASK["query_step"][lang]).format(id=pid, step=label)
        out.append(("query_step", lang, q, answer("query_step", pid, {"step": label, "text": text})))
    topic = topic_of(p)
    q = rng.choice(ASK["search"][lang]).format(topic=topic)
    out.append(("search", lang, q, answer("search", None, {"query": topic})))
    return out

def extra_json(rng, n):
    """Requests whose answers are valid JSON of other shapes."""
    words = ["sensor", "claim", "电池", "焊缝", "layer", "网络", "valve", "模型", "叶片", "signal"]
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            d = {"name": rng.choice(words), "count": rng.randrange(0, 1000), "ratio": round(rng.random(), 3), "ok": rng.random() < 0.5}
            q = "把下面的信息写成 JSON：" + "，".join(f"{k}={v}" for k, v in d.items())
        elif kind == 1:
            d = {"items": rng.sample(words, rng.randrange(1, 5)), "total": None}
            q = "Return the items " + ", ".join(d["items"]) + " as a JSON object with an items array and a null total."
        elif kind == 2:
            d = {"patent": {"id": f"CN1150{rng.randrange(10000, 99999)}A", "claims": [{"n": k + 1, "independent": k == 0} for k in range(rng.randrange(1, 4))]}}
            q = f"Describe patent {d['patent']['id']} with {len(d['patent']['claims'])} claims (the first independent) as nested JSON."
        elif kind == 3:
            text = rng.choice(['a "quoted" word', "back\\slash", "tab\there", "line\nbreak", "中文与 English"])
            d = {"text": text, "length": len(text)}
            q = "Put this text and its length into JSON: " + json.dumps(text, ensure_ascii=False)
        else:
            d = {"matrix": [[rng.randrange(-9, 10) for _ in range(3)] for _ in range(2)], "unit": rng.choice(["mm", "°C", "kPa"])}
            q = "把这个矩阵和单位写成 JSON：" + str(d["matrix"]) + " " + d["unit"]
        lang = "zh" if re.search(r"[\u4e00-\u9fff]", q) else "en"
        out.append(("json", lang, q, json.dumps(d, ensure_ascii=False)))
    return out

def record(i, split, intent, lang, question, reply):
    json.loads(reply)  # every answer is valid JSON
    return {"id": f"{split}-{i:04d}", "intent": intent, "messages": [
        {"role": "system", "content": SYSTEM[lang]}, {"role": "user", "content": question}, {"role": "assistant", "content": reply}]}

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", default=os.path.join(root, "data", "sample"))
    ap.add_argument("--output", default=os.path.join(root, "data", "instructions"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--heldout-fraction", type=float, default=0.15)
    ap.add_argument("--extra-json", type=int, default=0, help="also write train+json.jsonl with this many extra valid-JSON answers")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    examples = []
    for p in load_patents(args.sample):
        examples += examples_for(p, rng)
    for lang, asks in OTHER.items():
        for q in asks:
            examples.append(("other", lang, q, answer("other", None, {})))
    rng.shuffle(examples)
    n_held = round(len(examples) * args.heldout_fraction)
    held, train = examples[:n_held], examples[n_held:]
    os.makedirs(args.output, exist_ok=True)
    def write(name, rows, split):
        with open(os.path.join(args.output, name), "w", encoding="utf-8") as f:
            for i, ex in enumerate(rows):
                f.write(json.dumps(record(i, split, *ex), ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} examples")
    write("train.jsonl", train, "train")
    write("heldout.jsonl", held, "heldout")
    if args.extra_json > 0:
        mixed = train + extra_json(rng, args.extra_json)
        random.Random(args.seed + 1).shuffle(mixed)
        write("train+json.jsonl", mixed, "train")

if __name__ == "__main__":
    main()
