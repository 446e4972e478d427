"""Job webhooks: the callback URL's checks, Standard Webhooks signing, and the outbox sender.

When a job with a ``callback_url`` ends (``succeeded``, ``failed`` or ``cancelled``), its message is put
in the store's ``webhooks`` outbox in the transaction that ends the job (see ``store.py``). Every
replica runs a ``Sender``: it takes due messages (PostgreSQL: ``SKIP LOCKED``, each held while it is
being sent), POSTs each as the Standard Webhooks spec says (``webhook-id`` fixed per message, so a
receiver can drop a repeat; ``webhook-timestamp``; ``webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">`` with ``GATEWAY_WEBHOOK_SECRET``, signed by the ``standardwebhooks`` package), and
on anything but a 2xx answer tries again after ``webhook_retry_s``, doubling up to an hour, until the
message is ``webhook_max_age_s`` old; then it is dropped with an error in the log. Delivery is at least
once: a sender that dies mid-POST leaves the message in the outbox, and it is sent again.

Only ``http``/``https`` URLs are taken, and unless ``webhook_allow_private`` is set, a host that is or
resolves to a private, loopback, link-local or otherwise non-global address is refused, at submit and
again before each delivery (DNS may change between the two), so a job cannot probe the internal network.
Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

import anyio.to_thread
import httpx
from standardwebhooks import Webhook

from gateway.errors import InvalidRequest
from gateway.jobs.models import Delivery
from gateway.jobs.store import JobStore

log = logging.getLogger("gateway.jobs.webhooks")

MAX_URL_LENGTH = 2048
MAX_DELAY_S = 3600.0
BATCH = 16  # messages taken at once by one sender


def _refused(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="callback_url", code="invalid_callback_url")


def check_url(url: str, *, allow_private: bool) -> str:
    """``url`` when it may receive callbacks; ``InvalidRequest`` (400) otherwise. Blocking (DNS)."""
    if len(url) > MAX_URL_LENGTH:
        raise _refused(f"callback_url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise _refused("callback_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise _refused("callback_url must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise _refused("callback_url must not carry credentials")
    if not allow_private:
        for address in _addresses(host, parts.port or (443 if parts.scheme == "https" else 80)):
            if not address.is_global:
                raise _refused(f"callback_url's host {host} is a private, loopback or reserved address "
                               f"({address}); the gateway does not call those (GATEWAY_WEBHOOK_ALLOW_PRIVATE)")
    return url


def _addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise _refused(f"callback_url's host {host} does not resolve") from None
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def signed_headers(signer: Webhook, delivery: Delivery, now: datetime | None = None) -> dict[str, str]:
    now = now or datetime.now(timezone.utc)
    return {
        "content-type": "application/json",
        "user-agent": "whisper-triton-gateway",
        "webhook-id": delivery.id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign(delivery.id, now, delivery.body),
    }


def retry_delay(attempts: int, first_s: float) -> float:
    """Before attempt ``attempts + 2``: ``first_s`` doubled per earlier failure, at most an hour."""
    return min(first_s * 2 ** attempts, MAX_DELAY_S)


class Sender:
    """Sends the outbox's due messages from this replica until stopped."""

    def __init__(self, store: JobStore, secret: str, *, allow_private: bool = False, timeout_s: float = 10.0,
                 retry_s: float = 5.0, max_age_s: float = 86400.0, poll_s: float = 1.0) -> None:
        self.store = store
        self.signer = Webhook(secret)
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.max_age_s = max_age_s
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False, trust_env=False)
        self._task = asyncio.create_task(self._loop(), name="job-webhooks")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _loop(self) -> None:
        claim_s = self.timeout_s * (BATCH + 2)  # held long enough to send the whole batch one by one
        while True:
            self._wake.clear()
            try:
                due = await anyio.to_thread.run_sync(self.store.due_webhooks, BATCH, claim_s)
            except Exception as exc:  # the database is away: try again at the next tick
                log.warning("webhooks: cannot read the outbox: %s", exc)
                due = []
            if due:
                await asyncio.gather(*(self._send(d) for d in due))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def _send(self, delivery: Delivery) -> None:
        assert self._client is not None
        error = await self._post(delivery)
        try:
            if error is None:
                log.info("webhooks: %s for job %s delivered (attempt %d)", delivery.id, delivery.job_id,
                         delivery.attempts + 1)
                await anyio.to_thread.run_sync(self.store.webhook_done, delivery)
            elif time.time() - delivery.created_at >= self.max_age_s:
                log.error("webhooks: %s for job %s to %s dropped after %d attempts: %s", delivery.id,
                          delivery.job_id, delivery.url, delivery.attempts + 1, error)
                await anyio.to_thread.run_sync(self.store.webhook_done, delivery)
            else:
                delay = retry_delay(delivery.attempts, self.retry_s)
                log.warning("webhooks: %s for job %s: %s; retrying in %.1f s", delivery.id, delivery.job_id,
                            error, delay)
                await anyio.to_thread.run_sync(self.store.webhook_retry, delivery, delay, error)
        except Exception as exc:  # the message stays in the outbox and is sent again
            log.warning("webhooks: %s: cannot update the outbox: %s", delivery.id, exc)

    async def _post(self, delivery: Delivery) -> str | None:
        """None when the receiver took it (2xx); otherwise why not."""
        assert self._client is not None
        try:
            await anyio.to_thread.run_sync(lambda: check_url(delivery.url, allow_private=self.allow_private))
            response = await self._client.post(delivery.url, content=delivery.body.encode(),
                                               headers=signed_headers(self.signer, delivery))
        except InvalidRequest as exc:
            return exc.message
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"the receiver answered {response.status_code}"

