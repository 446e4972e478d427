"""Routers, one module per resource; each module exposes ``router``, and ``ROUTERS`` lists them all."""

from __future__ import annotations

import importlib

from fastapi import APIRouter

ROUTERS = ("system", "openai", "legacy", "web", "jobs", "stream", "realtime")


def load_routers() -> list[APIRouter]:
    return [importlib.import_module(f"{__name__}.{name}").router for name in ROUTERS]
