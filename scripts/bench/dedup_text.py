"""Text normalisation and shingling exactly as `dapt dedup` does it (see
docs/dedup.md), for the benchmark's ground truth and its Python peers."""
import unicodedata

SEPARATOR_CATEGORIES = {"Zs", "Zl", "Zp", "Cc", "Cf", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"}


def normalise(text: str) -> str:
    out = []
    pending = False
    for ch in unicodedata.normalize("NFC", text):
        if unicodedata.category(ch) in SEPARATOR_CATEGORIES:
            pending = True
            continue
        if pending and out:
            out.append(" ")
        pending = False
        out.append(ch.lower())
    return "".join(out)


def shingles(text: str, n: int = 5) -> set:
    s = normalise(text)
    if not s:
        return set()
    if len(s) < n:
        return {s}
    return {s[i:i + n] for i in range(len(s) - n + 1)}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)
