#!/usr/bin/env python3
"""Health probe for the gateway container.

    gateway-healthcheck          # readiness: GET /health, 200 only while Triton and its model answer
    gateway-healthcheck live     # liveness: GET /health/live, 200 while the gateway itself answers

Kubernetes uses readiness to route traffic (a pod whose Triton is frozen leaves the Service) and liveness
to restart (only a gateway that no longer answers); docker-compose's healthcheck is liveness, since an
unhealthy container is one to restart. Exits 0 only on 200. It sends the bearer token when API_KEY is
set, so the probe keeps working whether or not /health sits behind the token.
"""
import os
import sys
import urllib.request

path = "/health/live" if sys.argv[1:] == ["live"] else "/health"
request = urllib.request.Request(f"http://127.0.0.1:8080{path}")
if os.environ.get("API_KEY"):
    request.add_header("Authorization", f"Bearer {os.environ['API_KEY']}")
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # any failure (HTTPError 503, refused, timeout) means unhealthy
    print(f"unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
