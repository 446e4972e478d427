"""Whisper on Triton: the plain-Python engine behind model_repository/*/1/model.py.

Modules, in the order data flows through them:
- ``protocol``: the Triton contract (tensor names and dtypes, options, the SEGMENTS schema), numpy only;
- ``triton_io``: Python-backend requests <-> engine types, through ``protocol``;
- ``windows``: VAD speech spans merged into windows of at most 30 s;
- ``features``: log-mel features padded to the batch's context, not to 30 s;
- ``batching``: grouping windows into batched encode/generate calls;
- ``prompts``: decoder prompts (language, task, initial prompt);
- ``guards``: compression-ratio / log-prob / no-speech checks and the fallback decision;
- ``segments``: timestamp tokens -> segments on the original timeline;
- ``engine``: the model and the batched pipeline;
- ``config``: settings read once from config.pbtxt ``parameters``;
- ``weights``: bundled weights provisioning and model resolution;
"""
