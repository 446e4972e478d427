"""Moved to ``tests/utils/gateway.py`` (the one test launcher of gateways); this name stays for branches
written before the move."""

from tests.utils.gateway import run_gateway  # noqa: F401
