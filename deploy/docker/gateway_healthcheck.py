#!/usr/bin/env python3
"""Health probe for the gateway container (docker-compose healthcheck, Kubernetes readiness).

Exits 0 only if GET /health answers 200. It sends the bearer token when API_KEY is set, so the probe
keeps working whether or not /health sits behind the token.
"""
import os
import sys
import urllib.request

request = urllib.request.Request("http://127.0.0.1:8080/health")
if os.environ.get("API_KEY"):
    request.add_header("Authorization", f"Bearer {os.environ['API_KEY']}")
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # any failure (HTTPError 503, refused, timeout) means unhealthy
    print(f"unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
