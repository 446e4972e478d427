"""FastAPI gateway: OpenAI-compatible and legacy speech-to-text endpoints in front of Triton.

``uvicorn gateway.main:create_app --factory`` serves it; ``Settings`` (env prefix ``GATEWAY_``) configures it.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
