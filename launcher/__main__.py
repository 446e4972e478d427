"""``python -m launcher triton`` (``make triton``): Triton alone, supervised; ``python -m launcher serve``
(``make serve``): Triton and the gateway, supervised; ``python -m launcher backends``: prepare the Python
backend directory and print it. Settings: ``launcher.settings.LaunchSettings`` (and the gateway's own)."""

from __future__ import annotations

import argparse

from launcher.settings import LaunchSettings
from launcher.supervisor import Supervisor
from launcher.triton import prepare_backends


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher", description=__doc__)
    parser.add_argument("command", choices=["serve", "triton", "backends"])
    args = parser.parse_args(argv)
    settings = LaunchSettings()
    if args.command == "backends":
        print(prepare_backends(settings.build_dir))
        return 0
    return Supervisor(settings, with_gateway=args.command == "serve").run()


if __name__ == "__main__":
    raise SystemExit(main())
