# FastAPI gateway. Build context: the repository root (see docker-compose.yml).
ARG PYTHON_IMAGE_TAG=3.11-slim-bookworm

FROM python:${PYTHON_IMAGE_TAG} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY whisper_triton ./whisper_triton
COPY gateway ./gateway
COPY client ./client
# The project and every wheel its `gateway` extra needs (pinned in pyproject.toml); no CTranslate2 or
# model weights, which are the Triton image's `engine` and `weights` extras.
RUN pip wheel --no-cache-dir --wheel-dir /wheels "./[gateway]"

FROM python:${PYTHON_IMAGE_TAG}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Installed from the wheelhouse alone, so it is exactly what the first stage resolved.
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "whisper-triton[gateway]==0.1.0" && rm -rf /wheels \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin gateway \
    && install -d -o 10001 -g 10001 /var/lib/whisper-jobs
COPY deploy/docker/gateway_healthcheck.py /usr/local/bin/gateway-healthcheck
USER 10001:10001
WORKDIR /home/gateway
EXPOSE 8080
# python -m gateway: uvicorn with the gateway's server-level limits (largest WebSocket message, log lines).
CMD ["python", "-m", "gateway", "--host", "0.0.0.0", "--port", "8080"]
