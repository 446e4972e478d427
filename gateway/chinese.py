"""Chinese output script (OpenCC). Converters are loaded once and shared.

``s2twp`` (Taiwan standard with Taiwan phrasing, the server default), ``s2t``, ``s2tw``, ``s2hk``; ``t2s``
(Simplified, also requested as ``simplified``/``zh-hans``); ``none`` leaves the model's output as it is.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import opencc

from gateway.results import Transcription

CONVERSIONS = ("s2twp", "s2t", "s2tw", "s2hk", "t2s", "none")
ALIASES = {
    "traditional": "", "zh-hant": "", "hant": "",  # "" = the server default (a Traditional variant)
    "simplified": "t2s", "zh-hans": "t2s", "hans": "t2s", "s": "t2s",
    "tw": "s2twp", "zh-tw": "s2twp", "hk": "s2hk", "zh-hk": "s2hk", "off": "none", "raw": "none",
}
CHINESE_LANGUAGES = {"zh", "yue"}


def resolve(choice: str | None, default: str) -> str:
    """The OpenCC conversion for a request's choice; ``None``/empty gives ``default``.

    Raises ``ValueError`` for an unknown choice.
    """
    key = (choice or "").strip().lower()
    key = ALIASES.get(key, key)
    if not key:
        return default
    if key not in CONVERSIONS:
        raise ValueError(f"unknown Chinese script '{choice}'; use one of {', '.join(CONVERSIONS)}, simplified, traditional")
    return key


@lru_cache(maxsize=None)
def converter(conversion: str) -> Callable[[str], str]:
    if conversion == "none":
        return lambda text: text
    return opencc.OpenCC(conversion).convert


def preload(*conversions: str) -> None:
    for conversion in conversions or CONVERSIONS:
        converter(conversion)


def convert(result: Transcription, conversion: str) -> Transcription:
    """Convert text, segments and words of a Chinese result; other languages pass unchanged."""
    if conversion == "none" or result.language not in CHINESE_LANGUAGES:
        return result
    return result.map_text(converter(conversion))
