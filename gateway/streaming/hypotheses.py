"""Comparing two hypotheses of an open turn: the words they agree on are stable (a realtime ``delta``)."""

from __future__ import annotations

import re
import secrets
import unicodedata


_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)


def normalize_word(word: str) -> str:
    """Comparison key: case, width and edge punctuation do not make two hypotheses disagree."""
    text = unicodedata.normalize("NFKC", word).strip().lower()
    return _EDGE_PUNCT.sub("", text) or text


_TOKENS = re.compile(r"\s*[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]|\s*[^\s\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]+")


def tokens(text: str) -> list[str]:
    """Words with their leading space; CJK characters one by one."""
    return _TOKENS.findall(text)


def stable_prefix(previous: list[str], current: list[str]) -> int:
    """How many leading tokens two hypotheses agree on (case, width and edge punctuation aside)."""
    n = 0
    for a, b in zip(previous, current):
        if normalize_word(a) != normalize_word(b):
            break
        n += 1
    return n


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"
