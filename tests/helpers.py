"""Moved to ``tests/utils/helpers.py``; this name stays for branches written before the move."""

from tests.utils.helpers import (ROOT, SHARED_AUDIO, audio_of, cer, clip, free_port, load_manifest,  # noqa: F401
                                 normalize_en, normalize_zh, shared_audio_available, wer)
