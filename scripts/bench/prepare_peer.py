#!/usr/bin/env python3
"""The split `dapt prepare` does, in plain Python (the benchmark's peer).

Same inputs (JSONL + folders of front-matter .txt/.md), same defaults: NFC,
step markers by the same grammar (lead word, numbering family, separator;
increasing runs), blank-line / [0023] paragraphs, the token
estimate (1.6 per CJK char, 1.3 per Latin word, 1.0 per symbol), 512-token
fragments with 64-token overlap cut at sentence ends, the same JSONL fields.
Usage: prepare_peer.py OUT.jsonl INPUT... ; prints records, fragments, seconds.
"""
import hashlib, json, os, re, sys, time, unicodedata

END = [r"权\s*利\s*要\s*求\s*书?\s*$", r"说\s*明\s*书\s*摘\s*要\s*$", r"摘\s*要\s*$", r"附\s*图\s*说\s*明\s*$",
       r"(?i:what\s+is\s+claimed\s+is|we\s+claim|i\s+claim)\s*:?\s*$",
       r"(?i:claims|abstract|abstract of the disclosure|brief description of the drawings)\s*:?\s*$"]
PARA = r"[\[【]\d{3,5}[\]】]"
SP = "[ \t\u3000]"
alt = lambda ps: "|".join("(?:%s)" % p for p in ps)
MARKS = re.compile(r"^%s*(?:(?P<para>(?:%s)%s*)(?P<e1>%s)?|(?P<e2>%s))" % (SP, PARA, SP, alt(END), alt(END)), re.M)

# Step markers: the same grammar and defaults as PrepareConfig / StepGrammar.
STEP_MARKERS = {
    "zh": ["步骤{S|N|C|(N)}", "第{C|N}步", "在步骤{S|N}中", "{S}", "{(N)|N)}"],
    "en": ["Step {S|N}", "step {S|N}", "STEP {S|N}", "At step {S|N}", "In step {S|N}", "At block {N}", "In block {N}",
           "At operation {N}", "In operation {N}", "Block {N}", "Operation {N}", "In a {O} step",
           "at step {S|N}", "in step {S|N}", "at block {N}", "at operation {N}", "{S}",
           "{(a)|(i)|(N)|a)|i)|N)}"],
    "ja": ["ステップ{S|N}", "工程{S|N|(N)}", "{S}", "{(N)|N)}"],
}
STEP_SEPARATORS = {
    "zh": ["：", ":", "、", "，", ",", "．", ".", " "],
    "en": [":", ",", ".", "-", " "],
    "ja": ["において", "では", "で、", "にて", "：", ":", "、", "，", " "],
}
BOUNDARIES = sorted(["。", "；", ";", "：", ":", "，", ". ", "！", "？", "! ", "? ", "は、", "と、"], key=len, reverse=True)
BOUNDARY_RE = re.compile("|".join(re.escape(b) for b in BOUNDARIES))
INTRO = ["步骤", "方法", "工艺", "工序", "流程", "过程", "step", "method", "process", "procedure", "comprising", "comprises",
         "as follows", "ステップ", "工程", "手順"]
NON_STEP = {"a", "an", "the", "said", "each", "one", "two", "of", "in", "on", "at", "to", "is", "are", "was", "were", "be",
            "been", "as", "above", "below", "and", "or", "with", "from", "for", "by", "may", "can", "which", "that", "this",
            "these", "those", "it", "its", "described", "shown", "illustrated", "includes", "comprises", "has", "have", "will",
            "further", "then"}
CONNECTORS = ("and", "or", "then", "next", "finally", "subsequently", "thereafter")
INTRO_WINDOW = 240  # UTF-8 bytes before a bare run
COUNT_BY_ONE = {"C", "O", "(N)", "N)", "(a)", "a)", "(i)", "i)"}
BRACKETED = {"(N)", "N)", "(a)", "a)", "(i)", "i)"}
DIGITS = {c: i for i, c in enumerate("0123456789")}
DIGITS.update({c: i for i, c in enumerate("０１２３４５６７８９")})
CN_DIGITS = dict(zip("一二三四五六七八九零〇", [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0]))
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]
ROMAN = ["i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii", "xiv", "xv"]
OPEN, CLOSE = "(（", ")）"
SPACES = " \t\u3000"


def template(t):
    a, b = t.index("{"), t.index("}")
    return t[:a], t[a + 1:b].split("|"), t[b + 1:].lstrip(" ")


def grammar(templates, seps):
    return ([template(t) for t in templates], sorted((x for x in seps if x.strip(" ")), key=len, reverse=True), " " in seps)


GRAMMARS = {k: grammar(v, STEP_SEPARATORS[k]) for k, v in STEP_MARKERS.items()}
_all_t, _all_s = [], []
for k in sorted(STEP_MARKERS):
    _all_t += [t for t in STEP_MARKERS[k] if t not in _all_t]
    _all_s += [x for x in STEP_SEPARATORS[k] if x not in _all_s]
FALLBACK = grammar(_all_t, _all_s)


def skip(t, i, end):
    while i < end and t[i] in SPACES: i += 1
    return i


def is_letter(c): return c.isascii() and c.isalpha()


def dotted(t, i, end):
    levels, digits, j = [], "", i
    while True:
        v = n = 0
        while j < end and t[j] in DIGITS and n < 6:
            v = v * 10 + DIGITS[t[j]]; n += 1
            if not levels: digits += str(DIGITS[t[j]])
            j += 1
        if n == 0: return None
        if n == 6 and j < end and t[j] in DIGITS: return None
        levels.append(v)
        if j + 1 < end and t[j] in ".-" and t[j + 1] in DIGITS: j += 1
        else: break
    if j < end and is_letter(t[j]): return None
    return levels, digits, j


def ident(f, t, i, end):
    """(family, levels, digits), end — or None."""
    if f == "S":
        if i < end and t[i] in "SsＳｓ":
            r = dotted(t, i + 1, end)
            return r and ((f, r[0], r[1]), r[2])
        return None
    if f == "N":
        r = dotted(t, i, end)
        return r and ((f, r[0], ""), r[2])
    if f == "C":
        j, tens, units, seen = i, -1, 0, 0
        while j < end:
            c = t[j]
            if c == "十":
                if tens >= 0: return None
                tens = units if seen else 1; units = 0
            elif c in CN_DIGITS: units = CN_DIGITS[c]
            else: break
            seen += 1; j += 1
            if seen > 3: return None
        v = (tens * 10 if tens >= 0 else 0) + units
        return ((f, [v], ""), j) if seen and v > 0 else None
    if f == "O":
        low = t[i:i + 8].lower()
        for k, w in enumerate(ORDINALS):
            if low.startswith(w) and not (i + len(w) < end and is_letter(t[i + len(w)])):
                return (f, [k + 1], ""), i + len(w)
        return None
    if f in ("(N)", "(a)", "(i)"):
        if i < end and t[i] in OPEN:
            r = ident(f[1:], t, i + 1, end)
            return r and ((f, r[0][1], ""), r[1])
        return None
    if f == "N)":
        j, v = i, 0
        while j < end and t[j] in DIGITS and j - i < 3: v = v * 10 + DIGITS[t[j]]; j += 1
        return ((f, [v], ""), j + 1) if j > i and j < end and t[j] in CLOSE else None
    if f == "a)":
        return ((f, [ord(t[i]) - 96], ""), i + 2) if i + 1 < end and "a" <= t[i] <= "z" and t[i + 1] in CLOSE else None
    if f == "i)":
        j = i
        while j < end and j - i < 5 and t[j] in "ivx": j += 1
        w = t[i:j]
        return ((f, [ROMAN.index(w) + 1], ""), j + 1) if j > i and w in ROMAN and j < end and t[j] in CLOSE else None


def gerund(t, j, end):
    k = j
    while k < end and not is_letter(t[k]) and k - j < 4: k += 1
    e = k
    while e < end and is_letter(t[e]): e += 1
    return e - k > 4 and t[e - 3:e] == "ing"


def separated(t, j, end, g, closed):
    if j >= end: return True
    for x in g[1]:
        if t.startswith(x, j): return True
    k = skip(t, j, end)
    if k == j: return closed and not (t[j].isascii() and t[j].isalnum())
    if not (g[2] or closed): return False
    if k >= end: return True
    c = t[k]
    if c in "0123456789(,.": return False
    if is_letter(c):
        e = k
        while e < end and is_letter(t[e]): e += 1
        return t[k:e].lower() not in NON_STEP
    return True


def match(t, at, end, g):
    for prefix, fams, suffix in g[0]:
        if not t.startswith(prefix, at): continue
        i = at + len(prefix)
        if prefix: i = skip(t, i, end)
        found, after = [], i
        for f in fams:
            r = ident(f, t, i, end)
            if not r: continue
            if not found: after = r[1]; found.append(r[0])
            elif r[1] == after: found.append(r[0])
        if not found: continue
        j = after
        if suffix:
            j = skip(t, j, end)
            if not t.startswith(suffix, j): continue
            j += len(suffix)
        if not separated(t, j, end, g, found[0][0] in BRACKETED): continue
        return (at, found, bool(prefix), gerund(t, j, end))
    return None


def is_sub(a, top):
    if a[0] != top[0]: return False
    if len(a[1]) > len(top[1]): return a[1][:len(top[1])] == top[1]
    return a[0] == "S" and len(a[1]) == 1 and len(top[1]) == 1 and len(a[2]) > len(top[2]) and a[2].startswith(top[2])


def follows(a, top):
    if a[0] != top[0]: return False
    if a[0] in COUNT_BY_ONE: return len(a[1]) == 1 and a[1][0] == top[1][0] + 1
    return a[1][0] > top[1][0]


def can_start(a): return a[0] not in COUNT_BY_ONE or a[1] == [1]


def step_starts(text, marks, lang):
    key = (lang or "").lower().replace("_", "-").split("-")[0]
    g = GRAMMARS.get(key, FALLBACK) if lang else FALLBACK
    hits, ends = [], []
    pos = 0
    while pos < len(text):
        nl = text.find("\n", pos)
        end = len(text) if nl < 0 else nl
        plen, _, stop = marks.get(pos, (0, False, False))
        if stop:
            ends.append(pos)
        else:
            i = skip(text, pos + plen, end)
            h = i < end and match(text, i, end, g)
            if h: hits.append(h)
            for m in BOUNDARY_RE.finditer(text, pos + plen, end):
                at = skip(text, m.end(), end)
                for _ in range(2):  # up to two connectors
                    for c in CONNECTORS:
                        if text[at:at + len(c)].lower() == c and at + len(c) < end and text[at + len(c)] in " ,":
                            at = skip(text, at + len(c) + (text[at + len(c)] == ","), end)
                            break
                h = at < end and match(text, at, end, g)
                if h: hits.append(h)
        pos = end + 1
    return resolve(hits, ends, text)


def resolve(hits, ends, text):
    # run: [family, offsets, top, strong, gerund]
    opened, restart, finished, ne = {}, {}, [], 0
    for at, cands, lead, ger in hits:
        if ne < len(ends) and ends[ne] < at:
            while ne < len(ends) and ends[ne] < at: ne += 1
            finished += list(opened.values()) + list(restart.values())
            opened, restart = {}, {}
        handled = False
        for c in cands:
            run = opened.get(c[0])
            if run:
                if is_sub(c, run[2]): handled = True; break
                if follows(c, run[2]):
                    run[1].append(at); run[2] = c
                    r = restart.get(c[0])
                    if r and len(r[1]) == 1: del restart[c[0]]
                    handled = True; break
            r = restart.get(c[0])
            if r and follows(c, r[2]):
                r[1].append(at); r[2] = c
                if c[0] in opened: finished.append(opened[c[0]])
                opened[c[0]] = r
                del restart[c[0]]
                handled = True; break
        if handled: continue
        c = next((c for c in cands if can_start(c)), None)
        if c is None: continue
        run = [c[0], [at], c, lead or c[0] == "S", ger]
        if c[0] in opened: restart[c[0]] = run
        else: opened[c[0]] = run
    finished += list(opened.values()) + list(restart.values())
    runs = sorted((r for r in finished if len(r[1]) >= 2), key=lambda r: r[1][0])
    runs = [r for r in runs if r[3] or r[4] or introduced(text, r[1][0])]
    kept = []
    for r in runs:
        first = r[1][0]
        if not any(first < a[1][-1] or (not r[3] and a[3] and not any(a[1][-1] < e < first for e in ends)) for a in kept):
            kept.append(r)
    return sorted(o for r in kept for o in r[1])


def introduced(text, at):
    # The window is INTRO_WINDOW UTF-8 bytes before the run.
    head = text[max(0, at - INTRO_WINDOW):at].encode("utf-8")[-INTRO_WINDOW:].decode("utf-8", "ignore").lower()
    return any(w in head for w in INTRO)


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


def structure(text, lang):
    marks = {}
    for m in MARKS.finditer(text):
        if m.start() == 0 or text[m.start() - 1] == "\n":
            marks[m.start()] = (m.end("para") - m.start() if m.group("para") is not None else 0, False,
                                m.group("e1") is not None or m.group("e2") is not None)
    starts = step_starts(text, marks, lang)
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

    def open_step():
        state["step"] += 1; state["in"] = True; state["steps"] = state["step"]

    pos, ns = 0, 0
    while True:
        nl = text.find("\n", pos)
        end = len(text) if nl < 0 else nl
        s, e = trim(text, pos, end)
        if s == e:
            close()
        else:
            plen, _, stop = marks.get(pos, (0, False, False))
            content = pos
            if plen: close(); content = pos + plen
            while ns < len(starts) and starts[ns] < pos: ns += 1
            if stop:
                close(); state["in"] = False
            else:
                line_text = trim(text, pos + plen, end)[0]
                seg = content
                while ns < len(starts) and starts[ns] < end:
                    st = starts[ns]; ns += 1
                    if st > line_text:
                        if state["start"] < 0: state["start"] = seg
                        state["end"] = st
                        seg = st
                    close(); open_step()
                if state["start"] < 0: state["start"] = seg
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
    paras, steps = structure(text, rec.get("lang"))
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
