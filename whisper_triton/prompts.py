"""Decoder prompts: [<|startofprev|> prompt tokens] <|startoftranscript|> <|lang|> <|task|> [<|notimestamps|>]."""

from __future__ import annotations

from typing import Sequence

from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer

from .protocol import TASKS, InvalidArgument

MAX_TEXT_TOKENS = 448


def normalize_language(code: str | None, multilingual: bool, vocabulary_has) -> str | None:
    """Validate a language code; ``None``/empty means detect. ``vocabulary_has(token)`` checks the model."""
    if code is None or not code.strip():
        return None if multilingual else "en"
    code = code.strip().lower()
    if code not in _LANGUAGE_CODES or not vocabulary_has(f"<|{code}|>"):
        raise InvalidArgument(f"unknown language code '{code}'")
    if not multilingual and code != "en":
        raise InvalidArgument(f"this model is English-only; language '{code}' is not supported")
    return code


def normalize_task(task: str | None, multilingual: bool) -> str:
    task = (task or "transcribe").strip().lower() or "transcribe"
    if task not in TASKS:
        raise InvalidArgument(f"unknown task '{task}'; expected 'transcribe' or 'translate'")
    if task == "translate" and not multilingual:
        raise InvalidArgument("this model is English-only and cannot translate")
    return task


def build_prompt(tokenizer: Tokenizer, previous: Sequence[int] = (), without_timestamps: bool = False) -> list[int]:
    """The token prompt for one window. ``previous`` (the initial prompt) is cut to its last 223 tokens."""
    prompt: list[int] = []
    if previous:
        prompt.append(tokenizer.sot_prev)
        prompt.extend(list(previous)[-(MAX_TEXT_TOKENS // 2 - 1):])
    prompt.extend(tokenizer.sot_sequence)
    if without_timestamps:
        prompt.append(tokenizer.no_timestamps)
    return prompt


def encode_prompt(tokenizer: Tokenizer, text: str) -> list[int]:
    text = text.strip()
    return tokenizer.encode(" " + text) if text else []
