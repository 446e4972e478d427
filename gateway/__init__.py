"""FastAPI gateway: OpenAI-compatible and legacy speech-to-text endpoints in front of Triton.

``python -m gateway`` serves it (uvicorn with the server-level limits; ``uvicorn gateway.main:create_app
--factory`` works too); ``Settings`` (env prefix ``GATEWAY_``) configures it.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
