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

# Dependencies first, so a code change does not reinstall them. Versions come from pyproject.toml;
# tritonclient is left out (no cp312 wheel for its pinned geventhttpclient; the model never uses it),
# and so are nvidia-pytriton and its CUDA runtime (a second tritonserver, which this image already has).
COPY pyproject.toml README.md ./
COPY deploy/docker/pyproject_requirements.py deploy/docker/
RUN python3 deploy/docker/pyproject_requirements.py --extra embedded \
        --exclude tritonclient --exclude nvidia-pytriton --exclude nvidia-cuda-runtime-cu12 \
        > requirements.txt \
    && python3 -m pip install --no-cache-dir --requirement requirements.txt

COPY whisper_triton ./whisper_triton
RUN python3 -m pip install --no-cache-dir --no-deps .

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
