"""The embedded stack, launched and supervised (``make serve``, ``make triton``): the real tritonserver from
the ``nvidia-pytriton`` wheel without Docker, the gateway (``python -m gateway``) in front of it, and a
supervisor that restarts either when it dies or stops answering.

- ``settings``: ``LaunchSettings``, every variable the launcher reads (the gateway reads its own, ``GATEWAY_*``);
- ``processes``: a child process in its own process group, and the children of a process (from ``/proc``);
- ``triton``: the backend directory, the served repository and the ``TritonServer`` process;
- ``supervisor``: the gateway process and the ``Supervisor`` loop;
- ``__main__``: ``python -m launcher serve|triton|backends``.

The engine (``whisper_triton``) knows nothing of this package; Triton loads it from ``model_repository``.
"""
