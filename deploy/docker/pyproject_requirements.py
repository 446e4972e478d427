"""Print the pinned requirements of pyproject.toml (plus extras), minus excluded packages.

The Triton image needs this because `pip install .` cannot resolve there: the NGC image's Python is
3.12 and `tritonclient[all]==2.51.0` pins geventhttpclient<=2.0.2, which has no cp312 wheel. The
model never imports tritonclient, so the image installs every other pin from pyproject.toml (the one
source of versions) and then the project itself with --no-deps.

usage: python3 pyproject_requirements.py [--extra NAME]... [--exclude PREFIX]... [pyproject.toml]
"""
from __future__ import annotations

import argparse
import re
import tomllib


def requirements(pyproject: str, extras: list[str], exclude: list[str]) -> list[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    excluded = {re.sub(r"[-_.]+", "-", e).lower() for e in exclude}

    def name(req: str) -> str:
        return re.sub(r"[-_.]+", "-", re.split(r"[\[=<>!~;\s]", req, maxsplit=1)[0]).lower()

    return [r for r in reqs if name(r) not in excluded]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", nargs="?", default="pyproject.toml")
    parser.add_argument("--extra", action="append", default=[])
    parser.add_argument("--exclude", action="append", default=[])
    args = parser.parse_args()
    print("\n".join(requirements(args.pyproject, args.extra, args.exclude)))


if __name__ == "__main__":
    main()
