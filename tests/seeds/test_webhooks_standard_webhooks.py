"""Seed 003's signed events, delivered by Keygate and verified by an independent implementation:
the `standardwebhooks` package from PyPI (the specification's reference library), not our code.

A receiver runs in this process on 127.0.0.1 (so the server gets --webhooks-allow-private), an
endpoint is registered over the API, and each test reads what arrives.
"""

import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from conftest import create_account

WAIT = 15.0


class Receiver:
    """Records each POST (headers, body) and answers from a script, then 200."""

    def __init__(self):
        self.got: queue.Queue = queue.Queue()
        self.script: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.got.put((dict(self.headers.items()), body))
                status = receiver.script.pop(0) if receiver.script else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/webhooks"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def next(self, timeout: float = WAIT):
        return self.got.get(timeout=timeout)

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hooks(make_server, receiver):
    server = make_server("--webhooks-allow-private")
    account = create_account(server)
    auth = {"Authorization": f"Bearer {account.api_key}"}
    r = requests.post(
        server.url("/api/v1/webhooks"),
        headers=auth,
        json={"url": receiver.url, "events": ["post.*", "webhook.test"]},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    return server, auth, r.json()


def test_an_event_verifies_with_the_reference_library(hooks, receiver):
    server, auth, endpoint = hooks
    assert endpoint["secret"].startswith("whsec_")
    r = requests.post(
        server.url("/api/v1/events"),
        headers=auth,
        json={"type": "post.published", "data": {"post_id": "post_123", "platform": "twitter"}},
        timeout=10,
    )
    assert r.status_code == 202, r.text
    headers, body = receiver.next()
    payload = Webhook(endpoint["secret"]).verify(body, headers)
    assert payload["type"] == "post.published"
    assert payload["data"] == {"post_id": "post_123", "platform": "twitter"}
    assert headers["webhook-id"] == r.json()["id"]
    # The check can fail: a changed body does not verify.
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint["secret"]).verify(body.replace(b"twitter", b"mastodon"), headers)


def test_after_a_rotation_both_secrets_verify_for_a_day(hooks, receiver):
    server, auth, endpoint = hooks
    old = endpoint["secret"]
    r = requests.post(server.url(f"/api/v1/webhooks/{endpoint['id']}/rotate-secret"), headers=auth, timeout=10)
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    assert new != old
    r = requests.post(server.url(f"/api/v1/webhooks/{endpoint['id']}/test"), headers=auth, timeout=10)
    assert r.status_code == 202, r.text
    headers, body = receiver.next()
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(body, headers)["type"] == "webhook.test"
    assert Webhook(old).verify(body, headers)["type"] == "webhook.test"


def test_a_retry_keeps_the_webhook_id_and_verifies_again(hooks, receiver):
    server, auth, endpoint = hooks
    receiver.script = [500]
    r = requests.post(
        server.url("/api/v1/events"),
        headers=auth,
        json={"type": "post.failed", "data": {"post_id": "post_9", "error": "rate limited"}},
        timeout=10,
    )
    assert r.status_code == 202, r.text
    first_headers, first_body = receiver.next()
    started = time.monotonic()
    second_headers, second_body = receiver.next()
    assert time.monotonic() - started > 3, "the first retry waits about 5 seconds"
    assert second_headers["webhook-id"] == first_headers["webhook-id"] == r.json()["id"]
    assert second_body == first_body
    for headers, body in ((first_headers, first_body), (second_headers, second_body)):
        assert Webhook(endpoint["secret"]).verify(body, headers)["type"] == "post.failed"
