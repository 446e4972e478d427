"""The HTTP contract (``gateway.protocol``): every body the gateway builds validates against its model, and
the OpenAPI page documents them."""

from __future__ import annotations

from fastapi.testclient import TestClient

from gateway import errors, formats, protocol
from gateway.config import Settings
from gateway.main import create_app
from gateway.results import Segment, Transcription, Word

RESULT = Transcription(
    text="Hello there.", language="en", duration=1.5, task="transcribe", model="whisper",
    segments=(Segment(0, 0.0, 1.5, " Hello there.", -0.2, 0.01, 1.1, 0.0, (50, 51),
                      (Word(" Hello", 0.0, 0.5, 0.9), Word(" there.", 0.5, 1.5, 0.8)), speaker="A"),),
)


def test_every_json_format_validates_against_its_model_and_keeps_openais_fields():
    bodies = {
        protocol.TranscriptionJson: formats.render(RESULT, "json"),
        protocol.TranscriptionVerboseJson: formats.render(RESULT, "verbose_json", words=True),
        protocol.TranscriptionDiarizedJson: formats.render(RESULT, "diarized_json"),
    }
    for model, body in bodies.items():
        assert model.model_validate(body).model_dump(exclude_none=True) == body
    verbose = bodies[protocol.TranscriptionVerboseJson]
    assert set(verbose["segments"][0]) == {"id", "seek", "start", "end", "text", "tokens", "temperature",
                                           "avg_logprob", "compression_ratio", "no_speech_prob", "speaker"}
    assert verbose["segments"][0]["tokens"] == [50, 51]  # the model's tokens, not an empty list
    assert "words" not in formats.render(RESULT, "verbose_json")  # only when asked for


def test_error_bodies_are_openais_shape():
    body = errors.body_of(errors.InvalidRequest("bad\x00", param="language", code="invalid_value"))
    assert body == {"error": {"message": "bad\\x00", "type": "invalid_request_error", "param": "language",
                              "code": "invalid_value"}}
    assert protocol.ErrorResponse.model_validate(body)


def test_openapi_documents_every_response_shape():
    with TestClient(create_app(Settings(_env_file=None))) as client:
        spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for model in (protocol.TranscriptionJson, protocol.TranscriptionVerboseJson, protocol.TranscriptionDiarizedJson,
                  protocol.ListModelsResponse, protocol.Model, protocol.ErrorResponse, protocol.LegacyTranscription,
                  protocol.LegacyModels, protocol.Health):
        assert model.__name__ in schemas, model.__name__

    def refs(path: str, method: str, status: str) -> str:
        return str(spec["paths"][path][method]["responses"][status])

    for path in ("/v1/audio/transcriptions", "/v1/audio/translations"):
        assert "TranscriptionVerboseJson" in refs(path, "post", "200") and "ErrorResponse" in refs(path, "post", "400")
    assert "TranscriptionVerboseJson" in refs("/v1/jobs/{job_id}/result", "get", "200")
    assert "ListModelsResponse" in refs("/v1/models", "get", "200")
    assert "LegacyTranscription" in refs("/transcribe/file", "post", "200")
    assert "Health" in refs("/health", "get", "503")
