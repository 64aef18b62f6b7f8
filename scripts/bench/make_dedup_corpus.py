#!/usr/bin/env python3
"""Builds the dedup benchmark corpus from real text by controlled edits.

Real text: English prose from Python's reference manual (pydoc_data.topics)
and the licences in /usr/share/common-licenses; Chinese from the zh_CN
message catalogues in /usr/share/locale (real translated sentences).
A base record strings together sentences drawn at random from one language's
pool (about 400–1500 characters). Duplicates are copies of a base with
controlled edits:
  exact      identical text;
  surface    only case, whitespace and punctuation changed (identical after
             normalisation, so Jaccard 1);
  edited     a fraction e of the characters substituted, deleted or inserted
             and sometimes a sentence dropped or added (e spread so that the
             Jaccard similarities cover roughly 0.4–1).
Every pair inside a family (a base and its copies) is labelled with its exact
Jaccard on the same 5-character shingles dapt uses (dedup_text.py).

Writes CORPUS (JSONL: id, patent, lang, text, hash) and LABELS (JSONL: a, b,
jaccard, kind). Deterministic for a given --seed.
"""
import argparse, glob, gettext, hashlib, json, os, random, re, struct, sys, unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dedup_text import shingles, jaccard  # noqa: E402


def english_sentences():
    import pydoc_data.topics as topics
    text = "\n".join(topics.topics.values())
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path):
            text += "\n" + open(path, encoding="utf-8", errors="ignore").read()
    text = re.sub(r"\s+", " ", text)
    sents = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text)]
    return sorted({s for s in sents if 40 <= len(s) <= 400})


def read_mo(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">"
    _, n, orig_off, trans_off = struct.unpack(order + "4I", data[4:20])
    out = []
    for i in range(n):
        length, off = struct.unpack(order + "2I", data[trans_off + 8 * i: trans_off + 8 * i + 8])
        out.append(data[off:off + length].decode("utf-8", errors="ignore"))
    return out


def chinese_sentences():
    found = set()
    for path in sorted(glob.glob("/usr/share/locale/zh_CN/LC_MESSAGES/*.mo")):
        try:
            msgs = read_mo(path)
        except Exception:
            continue
        for m in msgs:
            for part in m.split("\x00"):
                part = re.sub(r"\s+", " ", part).strip()
                cjk = sum(1 for ch in part if "\u4e00" <= ch <= "\u9fff")
                if len(part) >= 8 and cjk >= len(part) * 0.5:
                    found.add(part if part[-1] in "。！？；" else part + "。")
    return sorted(found)


def make_base(rng, pool, lang):
    target = rng.randint(400, 900) if lang == "zh" else rng.randint(600, 1500)
    parts, size = [], 0
    while size < target:
        s = rng.choice(pool)
        parts.append(s)
        size += len(s)
    return ("" if lang == "zh" else " ").join(parts)


def surface_edit(rng, text):
    out = []
    for ch in text:
        r = rng.random()
        if ch == " " and r < 0.2:
            out.append("  ")
        elif ch.isalpha() and r < 0.1:
            out.append(ch.swapcase())
        elif ch in ",.;:" and r < 0.3:
            out.append({",": ";", ".": "!", ";": ",", ":": " -"}[ch])
        elif ch in "，。" and r < 0.3:
            out.append({"，": "、", "。": "；"}[ch])
        else:
            out.append(ch)
    return "".join(out)


def char_edit(rng, text, rate, alphabet):
    chars = list(text)
    edits = max(1, int(len(chars) * rate))
    for _ in range(edits):
        if not chars:
            break
        i = rng.randrange(len(chars))
        op = rng.random()
        if op < 0.5:
            chars[i] = rng.choice(alphabet)
        elif op < 0.75:
            del chars[i]
        else:
            chars.insert(i, rng.choice(alphabet))
    return "".join(chars)


def edited_copy(rng, text, pool, lang):
    sep = "" if lang == "zh" else " "
    splitter = r"(?<=[。！？；])" if lang == "zh" else r"(?<=[.!?])\s+"
    sents = [s for s in re.split(splitter, text) if s]
    r = rng.random()
    if r < 0.2 and len(sents) > 3:
        del sents[rng.randrange(len(sents))]
    elif r < 0.35:
        sents.insert(rng.randrange(len(sents) + 1), rng.choice(pool))
    text = sep.join(sents)
    alphabet = text if text else "abc"
    rate = rng.choice([0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08])
    return char_edit(rng, text, rate, alphabet)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("labels")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--duplicate-share", type=float, default=0.35)
    ap.add_argument("--zh-share", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=20261129)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    pools = {"en": english_sentences(), "zh": chinese_sentences()}
    print(f"sentence pools: en {len(pools['en'])}, zh {len(pools['zh'])}", file=sys.stderr)

    records = []   # (family, kind, lang, text)
    n_dups = int(args.records * args.duplicate_share)
    n_bases = args.records - n_dups
    families = []
    for f in range(n_bases):
        lang = "zh" if rng.random() < args.zh_share else "en"
        families.append((lang, make_base(rng, pools[lang], lang)))
        records.append((f, "base", lang, families[-1][1]))
    for _ in range(n_dups):
        f = rng.randrange(n_bases)
        lang, base = families[f]
        r = rng.random()
        if r < 0.12:
            records.append((f, "exact", lang, base))
        elif r < 0.24:
            records.append((f, "surface", lang, surface_edit(rng, base)))
        else:
            records.append((f, "edited", lang, edited_copy(rng, base, pools[lang], lang)))
    rng.shuffle(records)

    members = {}
    with open(args.corpus, "w", encoding="utf-8") as out:
        for i, (f, kind, lang, text) in enumerate(records):
            rid = f"D{i:07d}"
            nfc = unicodedata.normalize("NFC", text)
            h = "sha1:" + hashlib.sha1(nfc.encode("utf-8")).hexdigest()
            out.write(json.dumps({"id": rid, "patent": f"F{f:07d}", "lang": lang, "text": text, "hash": h},
                                 ensure_ascii=False) + "\n")
            members.setdefault(f, []).append((rid, kind, text))
    pairs = 0
    with open(args.labels, "w") as out:
        for f in sorted(members):
            m = members[f]
            if len(m) < 2:
                continue
            sets = [shingles(t) for _, _, t in m]
            for x in range(len(m)):
                for y in range(x + 1, len(m)):
                    kind = m[y][1] if m[x][1] == "base" else (m[x][1] if m[y][1] == "base" else "copies")
                    out.write(json.dumps({"a": m[x][0], "b": m[y][0], "jaccard": round(jaccard(sets[x], sets[y]), 6),
                                          "kind": kind}) + "\n")
                    pairs += 1
    print(f"wrote {len(records)} records ({n_bases} bases, {n_dups} copies), {pairs} labelled family pairs",
          file=sys.stderr)


if __name__ == "__main__":
    main()
