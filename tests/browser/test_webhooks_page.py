"""The Webhooks page in a real browser: add an endpoint (the signing secret shown once), send a
test event to a receiver running here, watch the delivery appear with its attempt, replay it,
and check what arrived with the reference Standard Webhooks library. Screenshots go to
artifacts/screenshots/ like the other pages'.
"""

import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from selenium.webdriver.common.by import By
from standardwebhooks.webhooks import Webhook

from test_dashboard import fill, follow, heading, sidebar, submit

EMAIL = "grace@example.com"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def private_webhooks(monkeypatch):
    # The receiver is on 127.0.0.1, which a production server refuses to deliver to.
    monkeypatch.setenv("KEYGATE_WEBHOOKS_ALLOW_PRIVATE", "true")


@pytest.fixture
def receiver():
    got: queue.Queue = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got.put((dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("Content-Length", "8")
            self.end_headers()
            self.wfile.write(b"received")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hooks", got
    httpd.shutdown()


def sign_up_and_log_in(server, browser):
    browser.get(server.base_url + "/signup")
    fill(browser, "name", "Grace Hopper")
    fill(browser, "email", EMAIL)
    fill(browser, "password", PASSWORD)
    fill(browser, "organization", "Hooks Inc")
    submit(browser, "Sign up")
    browser.get(server.link_in_mail_to(EMAIL))
    browser.get(server.base_url + "/login")
    fill(browser, "email", EMAIL)
    fill(browser, "password", PASSWORD)
    submit(browser, "Log in")
    assert browser.current_url.endswith("/keys")


def reload_until(browser, text: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    # Rendered text: CSS may capitalize a status.
    while text.lower() not in browser.find_element(By.TAG_NAME, "main").text.lower():
        assert time.monotonic() < deadline, f"{text!r} never appeared"
        time.sleep(0.3)
        browser.refresh()


def test_add_an_endpoint_send_a_test_event_and_replay_it(private_webhooks, server, browser, shoot, receiver):
    url, got = receiver
    sign_up_and_log_in(server, browser)

    sidebar(browser, "Webhooks")
    assert heading(browser) == "Webhooks"
    assert "No endpoints yet" in browser.page_source
    shoot("21-webhooks-empty")

    follow(browser, browser.find_element(By.CSS_SELECTOR, ".page-head").find_element(By.PARTIAL_LINK_TEXT, "Add Endpoint"))
    assert heading(browser) == "Add Endpoint"
    fill(browser, "url", url)
    fill(browser, "events", "webhook.test, key.*")
    fill(browser, "description", "Local receiver")
    shoot("22-webhook-new")
    submit(browser, "Add Endpoint")
    assert heading(browser) == "Endpoint added"
    assert "It will not be shown again" in browser.page_source
    secret = browser.find_element(By.ID, "new-key").get_attribute("value")
    assert secret.startswith("whsec_")
    shoot("23-webhook-secret")

    follow(browser, browser.find_element(By.PARTIAL_LINK_TEXT, "to the endpoint"))
    assert secret not in browser.page_source, "the secret is shown once"
    submit(browser, "Send test event")
    headers, body = got.get(timeout=15)
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "webhook.test"
    reload_until(browser, "succeeded")
    assert "received" in browser.page_source, "the response excerpt is in the log"
    shoot("24-webhook-deliveries")

    follow(browser, browser.find_element(By.CSS_SELECTOR, "form[action$='/replay'] button"))
    assert "queued again" in browser.page_source
    again_headers, again_body = got.get(timeout=15)
    assert again_headers["webhook-id"] == headers["webhook-id"]
    assert Webhook(secret).verify(again_body, again_headers)["type"] == "webhook.test"
    reload_until(browser, "2 newest of 2")
    shoot("25-webhook-replayed")
    shoot("26-phone-webhook", phone=True)

    sidebar(browser, "Webhooks")
    assert url in browser.page_source
    shoot("27-webhooks-list")
