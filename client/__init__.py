"""Direct Triton client for the Whisper model: a library first, with a CLI on top (``python -m client``).

    from client import WhisperTritonClient, decode_file
    with WhisperTritonClient("localhost:8001") as c:
        result = c.transcribe(decode_file("talk.mp4"), language="en")
        print(result.text)
"""

from .audio import decode_file, encode_wav
from .core import TritonTranscription, WhisperTritonClient, build_inputs

__all__ = ["WhisperTritonClient", "TritonTranscription", "build_inputs", "decode_file", "encode_wav"]
