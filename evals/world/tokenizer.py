"""A tiny CLIP tokenizer built in memory from the world's own word list (no download).

Byte-level characters stay in the vocabulary (so any prompt tokenizes), and BPE merges learned on the word
list make every known word a single token: the text encoder then learns word meanings, not spellings.
"""

from __future__ import annotations

from collections import Counter

MAX_LENGTH = 24


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Greedy BPE on the word list until each word is one symbol; ties broken by the pair itself (seeded-free)."""
    seqs = [list(w[:-1]) + [w[-1] + "</w>"] for w in sorted(set(words)) if w]
    merges: list[tuple[str, str]] = []
    while True:
        counts: Counter[tuple[str, str]] = Counter()
        for s in seqs:
            counts.update(zip(s, s[1:]))
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        for i, s in enumerate(seqs):
            out, j = [], 0
            while j < len(s):
                if j + 1 < len(s) and (s[j], s[j + 1]) == best:
                    out.append(s[j] + s[j + 1])
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            seqs[i] = out


def build_tokenizer(words: list[str], max_length: int = MAX_LENGTH):
    """CLIPTokenizer over byte characters + the merged words."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in bytes_to_unicode().values():
            vocab.setdefault(c + suffix, len(vocab))
    merges = learn_merges([w.lower() for w in words])
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=max_length)
