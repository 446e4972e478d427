"""Decoder prompts: [<|startofprev|> prompt tokens] <|startoftranscript|> <|lang|> <|task|> [<|notimestamps|>]."""

from __future__ import annotations

from typing import Sequence

from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer

from .types import TASKS, InvalidRequest

MAX_TEXT_TOKENS = 448
# Whisper's previous-text slot: half the text context less <|startofprev|>. Only a prompt's last this many
# tokens reach the decoder (OpenAI's API documents the same: "only the final 224 tokens").
MAX_PROMPT_TOKENS = MAX_TEXT_TOKENS // 2 - 1
# Only the end of a prompt is tokenized: 223 tokens never span more characters than this (a token is at most
# a few dozen bytes), and tokenizing a megabyte of text would cost the model instance most of a second.
PROMPT_TAIL_CHARS = 16 * 1024


def normalize_language(code: str | None, multilingual: bool, vocabulary_has) -> str | None:
    """Validate a language code; ``None``/empty means detect. ``vocabulary_has(token)`` checks the model."""
    if code is None or not code.strip():
        return None if multilingual else "en"
    code = code.strip().lower()
    if code not in _LANGUAGE_CODES or not vocabulary_has(f"<|{code}|>"):
        raise InvalidRequest(f"unknown language code '{code}'")
    if not multilingual and code != "en":
        raise InvalidRequest(f"this model is English-only; language '{code}' is not supported")
    return code


def normalize_task(task: str | None, multilingual: bool) -> str:
    task = (task or "transcribe").strip().lower() or "transcribe"
    if task not in TASKS:
        raise InvalidRequest(f"unknown task '{task}'; expected 'transcribe' or 'translate'")
    if task == "translate" and not multilingual:
        raise InvalidRequest("this model is English-only and cannot translate")
    return task


def build_prompt(tokenizer: Tokenizer, previous: Sequence[int] = (), without_timestamps: bool = False) -> list[int]:
    """The token prompt for one window. ``previous`` (the initial prompt) is cut to its last 223 tokens."""
    prompt: list[int] = []
    if previous:
        prompt.append(tokenizer.sot_prev)
        prompt.extend(list(previous)[-MAX_PROMPT_TOKENS:])
    prompt.extend(tokenizer.sot_sequence)
    if without_timestamps:
        prompt.append(tokenizer.no_timestamps)
    return prompt


def encode_prompt(tokenizer: Tokenizer, text: str) -> list[int]:
    """A user's prompt as plain text: its last ``MAX_PROMPT_TOKENS`` tokens.

    Whisper's special tokens written in the text (``<|endoftext|>``, ``<|fr|>``, ``<|translate|>``...) are
    encoded as the characters they are, never as control tokens: a prompt cannot end the previous-text
    slot, start a transcript or switch the language or task.
    """
    text = text[-PROMPT_TAIL_CHARS:].strip()
    if not text:
        return []
    hf = tokenizer.tokenizer  # the tokenizers.Tokenizer; its flag is shared, so it is restored at once
    previous = hf.encode_special_tokens
    hf.encode_special_tokens = True
    try:
        tokens = tokenizer.encode(" " + text)
    finally:
        hf.encode_special_tokens = previous
    return tokens[-MAX_PROMPT_TOKENS:]
