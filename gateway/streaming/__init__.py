"""Live transcription: one streaming core (``session``) that both WebSocket protocols use.

- ``session``: a live session fed 16 kHz float32: server VAD turns, partial hypotheses, one decode per turn.
- ``turns``: turn detection over speech probabilities; ``vad``: Silero VAD (ONNX, onnxruntime).
- ``serving``: the decoder over the shared Triton client, and admission control.
- ``ingest``: how a session reads its client (backlog, pace, idle, message size).
- ``events``: pydantic models of OpenAI's Realtime transcription events (``/v1/realtime``).
"""
