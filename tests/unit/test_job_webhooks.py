"""Job webhooks: URL checks, Standard Webhooks signatures (checked with the reference library), and the
outbox sender against a local receiver, including a receiver that fails twice."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
from standardwebhooks import Webhook

from gateway.errors import InvalidRequest
from gateway.jobs.api import WebhookMessage
from gateway.jobs.sqlite import SQLiteStore
from gateway.jobs.webhooks import Sender, check_url, retry_delay
from tests.unit.test_job_stores import chunk_text, make_job
from tests.utils.webhook_receiver import Receiver

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.mark.parametrize("url", [
    "ftp://example.com/hook", "file:///etc/passwd", "gopher://x", "http://", "example.com/hook",
    "http://user:pw@example.com/", "http://example.com:99999/", "https://" + "a" * 2100 + ".com/",
])
def test_only_http_and_https_urls_are_taken(url):
    with pytest.raises(InvalidRequest) as refused:
        check_url(url, allow_private=True)
    assert refused.value.param == "callback_url" and refused.value.status_code == 400


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.1.2.3/", "http://192.168.0.10/",
    "http://172.16.5.4/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://[fd00::1]/",
    "http://0.0.0.0/", "http://100.64.0.1/",
])
def test_private_and_loopback_receivers_are_refused_by_default(url):
    with pytest.raises(InvalidRequest) as refused:
        check_url(url, allow_private=False)
    assert "GATEWAY_WEBHOOK_ALLOW_PRIVATE" in refused.value.message
    assert check_url(url, allow_private=True) == url  # the setting lets them through


def test_a_public_address_is_taken():
    assert check_url("https://8.8.8.8/hook?x=1", allow_private=False) == "https://8.8.8.8/hook?x=1"


def test_backoff_doubles_and_is_capped():
    assert [retry_delay(n, 5.0) for n in range(4)] == [5.0, 10.0, 20.0, 40.0]
    assert retry_delay(30, 5.0) == 3600.0


async def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_each_ending_is_delivered_signed_and_a_failing_receiver_gets_it_on_the_third_try(tmp_path):
    store = SQLiteStore(tmp_path)
    answers = {"/ok": [200], "/flaky": [500, 500, 204]}
    with Receiver(lambda path, attempt: answers[path][min(attempt, len(answers[path])) - 1]) as receiver:
        ok = make_job(store, seconds=3, callback_url=f"{receiver.url}/ok", callback_metadata={"order": 1})
        flaky = make_job(store, seconds=3, callback_url=f"{receiver.url}/flaky")
        store.succeed(store.claim_next(), chunk_text("hello"))
        store.cancel(flaky.id)
        sender = Sender(store, SECRET, allow_private=True, retry_s=0.05, poll_s=0.02)
        sender.start()
        try:
            got = await asyncio.to_thread(receiver.wait_for, lambda r: len(r) == 4, 10)
            await wait_for(lambda: store.pending_webhooks() == 0)
        finally:
            await sender.stop()
    verifier = Webhook(SECRET)
    by_path = {p: [r for r in got if r.path == p] for p in answers}
    assert [r.status for r in by_path["/ok"]] == [200] and [r.status for r in by_path["/flaky"]] == [500, 500, 204]
    for r in got:
        payload = verifier.verify(r.body, r.headers)  # raises unless the signature is valid
        assert r.headers["content-type"] == "application/json"
    assert len({r.headers["webhook-id"] for r in by_path["/flaky"]}) == 1  # one message, sent three times
    sent = json.loads(by_path["/ok"][0].body)
    WebhookMessage.model_validate(sent)
    assert sent["type"] == "transcription.job.succeeded" and sent["data"]["id"] == ok.id
    assert sent["data"]["callback_metadata"] == {"order": 1} and sent["data"]["status"] == "succeeded"
    payload = json.loads(by_path["/flaky"][-1].body)
    assert payload["type"] == "transcription.job.cancelled" and payload["data"]["id"] == flaky.id
    tampered = dict(got[0].headers, **{"webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()})
    with pytest.raises(Exception, match="signature"):
        verifier.verify(got[0].body, tampered)
    store.close()


async def test_a_message_too_old_is_dropped(tmp_path):
    store = SQLiteStore(tmp_path)
    with Receiver(lambda path, attempt: 503) as receiver:
        job = make_job(store, seconds=3, callback_url=f"{receiver.url}/down")
        store.cancel(job.id)
        sender = Sender(store, SECRET, allow_private=True, retry_s=0.02, max_age_s=0.3, poll_s=0.02)
        sender.start()
        try:
            await wait_for(lambda: store.pending_webhooks() == 0)
        finally:
            await sender.stop()
        assert 1 <= len(receiver.received) <= 10  # retried for a bounded time, then given up


async def test_a_private_receiver_is_refused_at_delivery_too(tmp_path):
    store = SQLiteStore(tmp_path)
    with Receiver() as receiver:
        job = make_job(store, seconds=3, callback_url=f"{receiver.url}/hook")  # stored while allowed ...
        store.cancel(job.id)
        sender = Sender(store, SECRET, allow_private=False, retry_s=0.02, max_age_s=0.2, poll_s=0.02)
        sender.start()  # ... but this sender refuses private addresses: nothing is sent
        try:
            await wait_for(lambda: store.pending_webhooks() == 0)
        finally:
            await sender.stop()
        assert receiver.received == []
    store.close()


async def test_a_message_in_the_outbox_survives_a_restart(tmp_path):
    """The job ended while no sender ran (the process stopped right after the commit): the next process
    on the same store sends it."""
    first = SQLiteStore(tmp_path)
    with Receiver() as receiver:
        job = make_job(first, seconds=3, callback_url=f"{receiver.url}/after-restart")
        first.succeed(first.claim_next(), chunk_text("kept"))
        first.close()  # ... the gateway stops here

        store = SQLiteStore(tmp_path)
        sender = Sender(store, SECRET, allow_private=True, poll_s=0.02)
        sender.start()
        try:
            (got,) = await asyncio.to_thread(receiver.wait_for, lambda r: len(r) == 1, 10)
            await wait_for(lambda: store.pending_webhooks() == 0)
        finally:
            await sender.stop()
    assert Webhook(SECRET).verify(got.body, got.headers)["data"]["id"] == job.id  # signed, and the right job
    store.close()
