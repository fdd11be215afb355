"""Quality metrics: score enhanced text and summaries against human references.

Pure functions, with no Celery and no I/O: `punctuation_scores`, `casing_accuracy`,
`words_preserved` and `rouge`; the `*_counts` functions give the raw counts behind the first three,
which the reports sum over items (micro average).

Word alignment. Enhancement text is split into words with the regular expression `[\\w']+` (the
words of the pipeline's own faithfulness check), apostrophes at either end stripped; a word's
normalized form is its lowercase. Hypothesis and reference word sequences are aligned with a
word-level Levenshtein alignment (rapidfuzz `editops`): matched and substituted words form aligned
pairs, deleted reference words and inserted hypothesis words are unaligned.

Punctuation. The mark attached after a word is the first of `.` `,` `?` `!` found between the word
and the next word (so `word."` carries `.` and `?!` counts as `?`); other characters are ignored.
Per mark: a true positive is an aligned pair where both words carry that mark; a false positive is
a hypothesis word carrying it whose reference word carries another mark, none, or does not exist
(inserted word); a false negative is the converse. "overall" sums the counts of the four marks
(micro average), so a wrong mark counts once as a false positive and once as a false negative.
With nothing to find and nothing claimed, precision, recall and F1 are 1.0; precision with no
claims but something to find is 0.0, and likewise recall.

ROUGE. Lowercase, words are `\\w+` runs (so "it's" is two words), no stemming, no stop-word
removal. ROUGE-1/2 F1 come from clipped n-gram overlap counts, ROUGE-L F1 from the longest common
subsequence of the two whole texts (not the per-sentence "ROUGE-Lsum"). The figures follow the
usual definitions but are not byte-identical to the official ROUGE-1.5.5 script or to the
`rouge-score` package (which keeps only [a-z0-9] and can apply a Porter stemmer).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz.distance import LCSseq, Levenshtein

MARKS: tuple[str, ...] = (".", ",", "?", "!")

_WORD = re.compile(r"[\w']+")
_ROUGE_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class PRF:
    """Counts of one punctuation mark (or all of them) and the precision, recall and F1 they give."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: PRF) -> PRF:
        return PRF(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def support(self) -> int:
        """How many reference words carry the mark."""
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        claimed = self.tp + self.fp
        if claimed:
            return self.tp / claimed
        return 1.0 if self.fn == 0 else 0.0

    @property
    def recall(self) -> float:
        if self.support:
            return self.tp / self.support
        return 1.0 if self.fp == 0 else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": round(self.precision, 6),
            "recall": round(self.recall, 6),
            "f1": round(self.f1, 6),
        }


@dataclass(frozen=True)
class _Word:
    norm: str  # lowercase, apostrophes at either end stripped
    surface: str  # as written, apostrophes at either end stripped
    mark: str | None  # the punctuation mark after the word


def split_words(text: str) -> list[_Word]:
    found: list[tuple[str, int, int]] = []
    for m in _WORD.finditer(text):
        surface = m.group(0).strip("'")
        if surface:
            found.append((surface, m.start(), m.end()))
    words = []
    for i, (surface, _start, end) in enumerate(found):
        gap = text[end : found[i + 1][1]] if i + 1 < len(found) else text[end:]
        mark = next((c for c in gap if c in MARKS), None)
        words.append(_Word(surface.lower(), surface, mark))
    return words


def _align(ref: Sequence[str], hyp: Sequence[str]) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Aligned (ref, hyp) index pairs, unaligned ref indexes, unaligned hyp indexes."""
    pairs: list[tuple[int, int]] = []
    ref_only: list[int] = []
    hyp_only: list[int] = []
    i = j = 0
    for op in Levenshtein.editops(ref, hyp):
        while i < op.src_pos and j < op.dest_pos:
            pairs.append((i, j))
            i += 1
            j += 1
        if op.tag == "delete":
            ref_only.append(i)
            i += 1
        elif op.tag == "insert":
            hyp_only.append(j)
            j += 1
        else:
            pairs.append((i, j))
            i += 1
            j += 1
    while i < len(ref) and j < len(hyp):
        pairs.append((i, j))
        i += 1
        j += 1
    ref_only.extend(range(i, len(ref)))
    hyp_only.extend(range(j, len(hyp)))
    return pairs, ref_only, hyp_only


def punctuation_counts(hypothesis: str, reference: str) -> dict[str, PRF]:
    ref, hyp = split_words(reference), split_words(hypothesis)
    pairs, ref_only, hyp_only = _align([w.norm for w in ref], [w.norm for w in hyp])
    counts = {m: [0, 0, 0] for m in MARKS}  # tp, fp, fn
    for i, j in pairs:
        r, h = ref[i].mark, hyp[j].mark
        if r is not None and r == h:
            counts[r][0] += 1
            continue
        if h is not None:
            counts[h][1] += 1
        if r is not None:
            counts[r][2] += 1
    for j in hyp_only:
        if (h := hyp[j].mark) is not None:
            counts[h][1] += 1
    for i in ref_only:
        if (r := ref[i].mark) is not None:
            counts[r][2] += 1
    return {m: PRF(*c) for m, c in counts.items()}


def punctuation_scores(hypothesis: str, reference: str) -> dict[str, PRF]:
    """Precision, recall and F1 of `.` `,` `?` `!` after aligned words, per mark and "overall".

    See the module docstring for the alignment and the counting rules.
    """
    scores = punctuation_counts(hypothesis, reference)
    overall = PRF()
    for prf in scores.values():
        overall = overall + prf
    return {**scores, "overall": overall}


def casing_counts(hypothesis: str, reference: str) -> tuple[int, int]:
    ref, hyp = split_words(reference), split_words(hypothesis)
    pairs, _, _ = _align([w.norm for w in ref], [w.norm for w in hyp])
    same = [(ref[i], hyp[j]) for i, j in pairs if ref[i].norm == hyp[j].norm]
    return sum(r.surface == h.surface for r, h in same), len(same)


def casing_accuracy(hypothesis: str, reference: str) -> float:
    """Share of aligned words with the same normalized form that are also cased exactly alike.

    1.0 when no word pair matches (nothing to judge).
    """
    correct, total = casing_counts(hypothesis, reference)
    return correct / total if total else 1.0


def preserved_counts(hypothesis: str, raw: str) -> tuple[int, int]:
    before = [w.norm for w in split_words(raw)]
    after = [w.norm for w in split_words(hypothesis)]
    lost = sum(op.tag != "insert" for op in Levenshtein.editops(before, after))
    return len(before) - lost, len(before)


def words_preserved(hypothesis: str, raw: str) -> float:
    """Share of the raw words found unchanged, in order, in the hypothesis (word-level alignment).

    A dropped or substituted raw word is not preserved; inserted words do not count. 1.0 for an
    empty raw text.
    """
    kept, total = preserved_counts(hypothesis, raw)
    return kept / total if total else 1.0


def _rouge_tokens(text: str) -> list[str]:
    return _ROUGE_WORD.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap: int, hyp_total: int, ref_total: int) -> float:
    if not overlap or not hyp_total or not ref_total:
        return 0.0
    p, r = overlap / hyp_total, overlap / ref_total
    return 2 * p * r / (p + r)


def rouge(hypothesis: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 ("rouge1", "rouge2", "rougeL"); see the module docstring."""
    hyp, ref = _rouge_tokens(hypothesis), _rouge_tokens(reference)
    scores: dict[str, float] = {}
    for n in (1, 2):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        scores[f"rouge{n}"] = _f1(sum((h & r).values()), sum(h.values()), sum(r.values()))
    scores["rougeL"] = _f1(int(LCSseq.similarity(hyp, ref)), len(hyp), len(ref))
    return scores
