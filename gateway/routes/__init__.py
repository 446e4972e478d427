"""Routers, one module per resource. Each module exposes ``router``.

``ROUTERS`` are always included; ``OPTIONAL_ROUTERS`` are included when their module exists (e.g. a
``stream.py`` with the WebSocket route): dropping the file in is enough.
"""

from __future__ import annotations

import importlib
import importlib.util

from fastapi import APIRouter

ROUTERS = ("system", "openai", "legacy", "web", "jobs", "realtime")
OPTIONAL_ROUTERS = ("stream",)


def load_routers() -> list[APIRouter]:
    routers = [importlib.import_module(f"{__name__}.{name}").router for name in ROUTERS]
    for name in OPTIONAL_ROUTERS:
        if importlib.util.find_spec(f"{__name__}.{name}") is not None:
            routers.append(importlib.import_module(f"{__name__}.{name}").router)
    return routers
