#!/usr/bin/env python3
"""The split `dapt prepare` does, in plain Python (the benchmark's peer).

Same inputs (JSONL + folders of front-matter .txt/.md), same defaults: NFC,
step markers at line starts, blank-line / [0023] paragraphs, the token
estimate (1.6 per CJK char, 1.3 per Latin word, 1.0 per symbol), 512-token
fragments with 64-token overlap cut at sentence ends, the same JSONL fields.
Usage: prepare_peer.py OUT.jsonl INPUT... ; prints records, fragments, seconds.
"""
import hashlib, json, os, re, sys, time, unicodedata

STEP = [r"步骤\s*[（(]?\s*[Ss]?\d{1,4}[a-z]?\s*[）)]?", r"[Ss]\d{1,4}[a-z]?\s*[:：、.．]",
        r"[Ss]tep\s+[Ss]?\d{1,4}[a-z]?\b", r"STEP\s+[Ss]?\d{1,4}\b", r"[(（][a-z][)）]"]
END = [r"权\s*利\s*要\s*求\s*书?\s*$", r"说\s*明\s*书\s*摘\s*要\s*$", r"摘\s*要\s*$", r"附\s*图\s*说\s*明\s*$",
       r"(?i:what\s+is\s+claimed\s+is|we\s+claim|i\s+claim)\s*:?\s*$",
       r"(?i:claims|abstract|abstract of the disclosure|brief description of the drawings)\s*:?\s*$"]
PARA = r"[\[【]\d{3,5}[\]】]"
SP = "[ \t\u3000]"
alt = lambda ps: "|".join("(?:%s)" % p for p in ps)
MARKS = re.compile(r"^%s*(?:(?P<para>(?:%s)%s*)(?:(?P<s1>%s)|(?P<e1>%s))?|(?P<s2>%s)|(?P<e2>%s))"
                   % (SP, PARA, SP, alt(STEP), alt(END), alt(STEP), alt(END)), re.M)
SPACE = set("\t\n\x0b\x0c\r \xa0\u3000\u2002\u2003\u2009")
CJK, WORD, SYMBOL = 1600, 1300, 1000
BUDGET, OVERLAP = 512_000, 64_000


def kind(c):
    o = ord(c)
    if o < 0x80:
        if c in " \t\n\x0b\x0c\r": return "space"
        if c.isalnum(): return "word"
        return "symbol"
    if 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x3134F: return "cjk"
    if 0x3001 <= o <= 0x303F or 0x3040 <= o <= 0x30FF or 0x3100 <= o <= 0x31FF or 0xAC00 <= o <= 0xD7AF: return "cjk"
    if 0xFF01 <= o <= 0xFF60 or 0xFE30 <= o <= 0xFE4F: return "cjk"
    if o in (0x3000, 0xA0, 0x2028, 0x2029, 0x202F, 0x205F) or 0x2000 <= o <= 0x200A: return "space"
    if (0x300 <= o <= 0x36F or o in (0x200C, 0x200D) or 0xFE00 <= o <= 0xFE0F or 0x1F3FB <= o <= 0x1F3FF
            or 0x1AB0 <= o <= 0x1AFF or 0x1DC0 <= o <= 0x1DFF or 0x20D0 <= o <= 0x20FF or 0xE0100 <= o <= 0xE01EF):
        return "attach"
    if 0xC0 <= o <= 0x24F or 0x370 <= o <= 0x4FF: return "word"
    cat = unicodedata.category(c)
    if cat in ("Mn", "Me", "Mc"): return "attach"
    if c.isalpha() or c.isnumeric(): return "word"
    if c.isspace(): return "space"
    return "symbol"


def pieces(text):
    ends, costs = [], []
    word = 0
    for i, c in enumerate(text):
        k = kind(c)
        if k == "space" or k == "attach":
            if not ends: ends.append(i + 1); costs.append(0 if k == "space" else SYMBOL)
            else: ends[-1] = i + 1
            if k == "space": word = 0
        elif k == "word":
            if 0 < word < 24 and ends[-1] == i: ends[-1] = i + 1; word += 1
            else: ends.append(i + 1); costs.append(WORD); word = 1
        else:
            ends.append(i + 1); costs.append(CJK if k == "cjk" else SYMBOL); word = 0
    return ends, costs


def ends_sentence(text, end):
    e, saw = end, end >= len(text)
    while e > 0 and text[e - 1] in " \n\t": e -= 1; saw = True
    if e == 0: return False
    c = text[e - 1]
    if c in ".!?;": return saw
    return c in "。！？；"


def rstrip(text, s, e):
    while e > s and text[e - 1] in SPACE: e -= 1
    return e


def fragments(text):
    ends, costs = pieces(text)
    n = len(ends)
    prefix = [0]
    for c in costs: prefix.append(prefix[-1] + c)
    sent = [ends_sentence(text, x) for x in ends]
    out, a, b = [], 0, 0
    while n:
        b = max(b, a)
        while b < n and prefix[b + 1] - prefix[a] <= BUDGET: b += 1
        if b == a: b = a + 1
        if b < n:
            j = b
            while j > a and prefix[j] - prefix[a] >= BUDGET // 2:
                if sent[j - 1]: break
                j -= 1
            if j > a and prefix[j] - prefix[a] >= BUDGET // 2 and sent[j - 1]: b = j
        start = ends[a - 1] if a else 0
        out.append((start, rstrip(text, start, ends[b - 1]), prefix[b] - prefix[a]))
        if b >= n: break
        nxt = b
        while nxt > a + 1 and prefix[b] - prefix[nxt - 1] <= OVERLAP: nxt -= 1
        a = nxt
    return out


def trim(text, s, e):
    while s < e and text[s] in SPACE: s += 1
    return s, rstrip(text, s, e)


def structure(text):
    marks = {}
    for m in MARKS.finditer(text):
        if m.start() == 0 or text[m.start() - 1] == "\n":
            marks[m.start()] = (m.end("para") - m.start() if m.group("para") is not None else 0,
                                m.group("s1") is not None or m.group("s2") is not None,
                                m.group("e1") is not None or m.group("e2") is not None)
    paras, counts = [], {}
    state = {"step": 0, "in": False, "start": -1, "end": -1, "steps": 0}

    def close():
        s = state["start"]; state["start"] = -1
        if s < 0 or not state["in"]: return
        s, e = trim(text, s, state["end"])
        if s >= e: return
        st = state["step"]
        counts[st] = counts.get(st, 0) + 1
        paras.append((st, counts[st], s, e))

    pos = 0
    while True:
        nl = text.find("\n", pos)
        end = len(text) if nl < 0 else nl
        s, e = trim(text, pos, end)
        if s == e:
            close()
        else:
            plen, step, stop = marks.get(pos, (0, False, False))
            content = pos
            if plen: close(); content = pos + plen
            if stop:
                close(); state["in"] = False
            else:
                if step:
                    close(); state["step"] += 1; state["in"] = True; state["steps"] = state["step"]
                if state["start"] < 0: state["start"] = content
                state["end"] = end
        if nl < 0: break
        pos = nl + 1
    close()
    return paras, state["steps"]


def q(v):
    return "null" if v is None else json.dumps(v, ensure_ascii=False)


def norm(t):
    return unicodedata.normalize("NFC", t).replace("\r\n", "\n").replace("\r", "\n")


def emit(rec, pages, paged, out):
    texts = [norm(p) for p in pages]
    starts, pos = [], 0
    for t in texts: starts.append(pos); pos += len(t) + 1
    text = "\n".join(texts)
    if not text.strip(): return 0
    paras, steps = structure(text)
    if not steps: return 0
    n = 0
    pid = rec["patent"]
    head = '"patent":%s,"jurisdiction":%s,"title":%s' % (q(pid), q(rec.get("jurisdiction")), q(rec.get("title")))
    tail = '"lang":%s,"pub_date":%s,"source":%s' % (q(rec.get("lang")), q(rec.get("pub_date")), q(rec.get("source")))
    for step, number, s, e in paras:
        para = text[s:e]
        for k, (fs, fe, cost) in enumerate(fragments(para)):
            frag = para[fs:fe]
            page = None
            if paged:
                at = s + fs
                page = max(i for i, st in enumerate(starts) if st <= at) + 1
            h = hashlib.sha1(frag.encode("utf-8")).hexdigest()
            out.write('{"id":%s,%s,"step":%d,"paragraph":%d,"fragment":%d,"text":%s,%s,"page":%s,"hash":"sha1:%s"}\n'
                      % (q("%s-step%d-%d-%d" % (pid, step, number, k + 1)), head, step, number, k + 1, q(frag), tail,
                         "null" if page is None else page, h))
            n += 1
    return n


def front_matter(raw):
    lines = raw.split("\n")
    if lines[0].rstrip() != "---": return None, None
    meta = {}
    for i in range(1, len(lines)):
        line = lines[i].rstrip()
        if line in ("---", "..."):
            return meta, "\n".join(lines[i + 1:])
        if not line or line.startswith("#"): continue
        k, _, v = line.partition(":")
        v = v.strip()
        if v[:1] == '"': v = json.loads(v[:v.rindex('"') + 1])
        elif v[:1] == "'": v = v[1:v.rindex("'")].replace("''", "'")
        else: v = v.split(" #")[0].strip() or None
        meta[k.strip()] = v
    return None, None


def main():
    out_path, inputs = sys.argv[1], sys.argv[2:]
    files = []
    for inp in inputs:
        if os.path.isdir(inp):
            for root, dirs, names in os.walk(inp):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".") and n.lower().endswith((".txt", ".md", ".jsonl"))]
        else:
            files.append(inp)
    t0 = time.time()
    records = patents = frags = rejects = 0
    nbytes = sum(os.path.getsize(f) for f in files)
    with open(out_path, "w", encoding="utf-8") as out:
        for path in files:
            if path.endswith(".jsonl"):
                with open(path, "rb") as f:
                    for line in f:
                        if not line.strip(): continue
                        records += 1
                        try:
                            rec = json.loads(line)
                            text = rec.get("text")
                            pages, paged = (rec["pages"], True) if rec.get("pages") is not None else (text.split("\f"), "\f" in text)
                            n = emit(rec, pages, paged, out)
                        except Exception:
                            n = 0
                        if n: patents += 1; frags += n
                        else: rejects += 1
            else:
                records += 1
                raw = open(path, encoding="utf-8").read().lstrip("\ufeff")
                meta, body = front_matter(raw)
                n = emit(meta, body.split("\f"), "\f" in body, out) if meta and meta.get("patent") else 0
                if n: patents += 1; frags += n
                else: rejects += 1
    dt = time.time() - t0
    print("python peer: %d records, %d patents, %d fragments, %d rejects, %.2f s, %.1f MB/s"
          % (records, patents, frags, rejects, dt, nbytes / 1e6 / dt))


if __name__ == "__main__":
    main()
