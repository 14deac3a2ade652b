"""Fixtures for the browser tests: a real `keygate serve` and a real headless Chromium.

The server is the binary named by $KEYGATE_BIN (scripts/test builds it), on a free port of
127.0.0.1 over a data directory of its own; its file mailer writes each message under
`<data dir>/mail/`, where the tests read the links a person would click. Chromium and its
driver are Debian's (`chromium`, `chromium-driver`: scripts/setup-services installs them);
Selenium is pointed at them, so it never downloads a browser of its own.

Screenshots go to artifacts/screenshots/ at the top of the repository.
"""

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("KEYGATE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("KEYGATE_CHROMEDRIVER", "/usr/bin/chromedriver")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    base_url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen

    def mail_to(self, address: str) -> str:
        """The newest message the file mailer wrote to `address`."""
        mail_dir = self.data_dir / "mail"
        for path in sorted(mail_dir.glob("*.eml"), reverse=True):
            text = path.read_bytes().decode()
            if f"To: {address}\r\n" in text:
                return text
        raise AssertionError(f"no mail to {address} in {mail_dir}")

    def link_in_mail_to(self, address: str) -> str:
        text = self.mail_to(address)
        for word in text.split():
            if word.startswith(self.base_url):
                return word
        raise AssertionError(f"no link to {self.base_url} in:\n{text}")


@pytest.fixture
def server(tmp_path):
    path = os.environ.get("KEYGATE_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("KEYGATE_BIN is not set to the keygate binary: run through scripts/test")
    data_dir = tmp_path / "data"
    log_path = tmp_path / "server.log"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    # Usage is written every second here (the default is every 30 s), for the Usage page's test.
    config = tmp_path / "keygate.toml"
    config.write_text("usage_flush_seconds = 1\n")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [path, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
             "--config", str(config), "--brand-name", "Audian"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    running = Server(base_url, data_dir, log_path, process)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"keygate exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if requests.get(base_url + "/healthz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"keygate did not start:\n{log_path.read_text()}")
        time.sleep(0.1)
    try:
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def browser():
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is missing: run scripts/setup-services (Debian's chromium, chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shoot(browser):
    """Saves a screenshot of the whole page as artifacts/screenshots/<name>.png: at a desktop
    width, or with `phone=True` as a 390 px wide phone (touch, mobile viewport)."""

    def take(name: str, phone: bool = False) -> Path:
        width = 390 if phone else 1280
        metrics = {"width": width, "height": 844 if phone else 900, "deviceScaleFactor": 1, "mobile": phone}
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        height = browser.execute_script(
            "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"
        )
        metrics["height"] = max(int(height), metrics["height"])
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        path = SCREENSHOTS / f"{name}.png"
        browser.save_screenshot(str(path))
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        assert overflow <= 0, f"{name}: the page is {overflow} px wider than a {width} px viewport"
        return path

    return take
