"""``python -m gateway``: uvicorn serving ``create_app()``, with the server-level limits taken from ``Settings``.

    python -m gateway                          # GATEWAY_HOST:GATEWAY_PORT (0.0.0.0:8080)
    python -m gateway --host 127.0.0.1 --port 8081 --log-level warning

What only the server can bound is set here: the largest WebSocket message (``GATEWAY_STREAM_MAX_FRAME_KIB``;
uvicorn's default is 16 MiB, half a minute of a stream's audio is 1 MiB). Idle keep-alive connections close
after uvicorn's 5 s; its WebSocket protocol reads no further while a message waits for the app, so a stream
whose reading is held (its buffer at the cap) keeps the rest in the client's socket. The gateway's own log lines (``gateway.*``: the
watchdog's verdicts, a client gone mid-request as one 499 line) go to stderr at the chosen level.
X-Forwarded-For is trusted from the addresses in ``FORWARDED_ALLOW_IPS`` (uvicorn's setting; 127.0.0.1 by
default), which is what makes per-client limits see the real client behind a proxy.
"""

from __future__ import annotations

import argparse
import copy

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from gateway.config import Settings


def log_config(level: str) -> dict:
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["gateway"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def main(argv: list[str] | None = None) -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    uvicorn.run("gateway.main:create_app", factory=True, host=args.host, port=args.port, log_level=args.log_level,
                log_config=log_config(args.log_level), ws_max_size=settings.stream_max_frame_kib * 1024)


if __name__ == "__main__":
    main()
