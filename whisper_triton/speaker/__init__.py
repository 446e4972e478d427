"""Who spoke when: the speaker model behind model_repository/speaker (plain numpy, no torch).

- ``weights``: Resemblyzer's GE2E voice encoder, fetched as a PyPI wheel (no hub) and read without torch;
- ``encoder``: its 40-band mel front end and 3-layer LSTM in numpy, batched over windows;
- ``regions``: VAD speech regions cut into overlapping embedding windows;
- ``clustering``: windows -> speakers (count found automatically) -> turns, and naming by references.

``clustering`` needs only numpy: the gateway imports it without the engine's packages.
"""
