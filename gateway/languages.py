"""Whisper's language codes and their English names (OpenAI's verbose_json reports the name)."""

from __future__ import annotations

from gateway.errors import InvalidRequest

LANGUAGES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian",
    "kn": "kannada", "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque",
    "is": "icelandic", "hy": "armenian", "ne": "nepali", "mn": "mongolian", "bs": "bosnian",
    "kk": "kazakh", "sq": "albanian", "sw": "swahili", "gl": "galician", "mr": "marathi",
    "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona", "yo": "yoruba", "so": "somali",
    "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be": "belarusian", "tg": "tajik",
    "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek",
    "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan",
    "tl": "tagalog", "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian",
    "ln": "lingala", "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese",
    "yue": "cantonese",
}
_BY_NAME = {name: code for code, name in LANGUAGES.items()}
# Regional tags users send; the script part is handled by the Chinese conversion.
_REGIONAL = {"zh-tw": "zh", "zh-hant": "zh", "zh-cn": "zh", "zh-hans": "zh", "zh-hk": "zh", "zh-sg": "zh",
             "mandarin": "zh", "en-us": "en", "en-gb": "en", "pt-br": "pt"}


def normalize(value: str | None) -> str:
    """A request's language (code, English name or regional tag) -> Whisper code; "" = detect.

    Anything else is refused here with 400 ``unsupported_language``, before Triton: its message shows
    the value ASCII-escaped and shortened, and Triton never caches a refusal for it. (Whether a model
    supports the language, e.g. an English-only one, is still the model's answer.)
    """
    key = (value or "").strip().lower().replace("_", "-")
    if key in ("", "auto", "detect"):
        return ""
    if key in LANGUAGES:
        return key
    code = _REGIONAL.get(key) or _BY_NAME.get(key)
    if code is None:
        shown = ascii(value[:32]) + ("..." if len(value or "") > 32 else "")
        raise InvalidRequest(f"Unsupported language {shown}: use a Whisper language code such as 'en' or 'zh', "
                             "or an English name such as 'german'", param="language", code="unsupported_language")
    return code


def name(code: str) -> str:
    return LANGUAGES.get(code, code)
