"""Fixtures for the seed tests: each test talks HTTP to a real `keygate serve`.

`server` starts the binary named by $KEYGATE_BIN (scripts/test builds it and sets it) on a free
port of 127.0.0.1, over a data directory of its own, and stops it when the test ends. The
server's log is kept beside the data directory and printed when a test fails. `make_server`
starts more servers, with extra `serve` flags (e.g. `--token-algorithm EdDSA`).

`account` creates, through the admin CLI, the account the seeds' reader signs up for: its owner
is John Doe, john@example.com, like the user in seed 000's expected response.
"""

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

STARTUP_TIMEOUT = 30.0
ADMIN_TIMEOUT = 60.0
START_ATTEMPTS = 3


def keygate_bin() -> str:
    path = os.environ.get("KEYGATE_BIN")
    if not path:
        pytest.fail("KEYGATE_BIN is not set: run the seed tests through scripts/test")
    if not os.access(path, os.X_OK):
        pytest.fail(f"KEYGATE_BIN={path} is not an executable file")
    return path


def free_port() -> int:
    # The port is free when we look; another process could take it before the server binds,
    # which is why starting is retried on a new port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    bin: str
    base_url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen

    def admin(self, *args: str) -> str:
        """Runs `keygate admin <args> --data-dir <data dir>` and returns its stdout."""
        command = [self.bin, "admin", *args, "--data-dir", str(self.data_dir)]
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=ADMIN_TIMEOUT,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"keygate admin {' '.join(args)} exited with {result.returncode}:\n"
                f"{result.stderr}{result.stdout}"
            )
        return result.stdout

    def url(self, path: str) -> str:
        return self.base_url + path

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(bin_path: str, root: Path, extra_args: tuple[str, ...] = ()) -> Server:
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = root / "server.log"
    failures = []
    for attempt in range(START_ATTEMPTS):
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [
                    bin_path,
                    "serve",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--data-dir",
                    str(data_dir),
                    *extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = Server(bin_path, base_url, data_dir, log_path, process)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                failures.append(f"attempt {attempt + 1}: exited with {process.returncode}")
                break
            try:
                if requests.get(base_url + "/healthz", timeout=1).status_code == 200:
                    return server
            except requests.RequestException:
                pass
            time.sleep(0.1)
        else:
            server.stop()
            pytest.fail(
                f"keygate did not answer GET /healthz with 200 within {STARTUP_TIMEOUT:.0f}s; "
                f"log {log_path}:\n{server.log_tail()}"
            )
    pytest.fail(
        f"keygate serve did not start ({'; '.join(failures)}); log {log_path}:\n"
        f"{Server(bin_path, '', data_dir, log_path, process).log_tail()}"
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Keeps each phase's report on the test item, so that fixtures can tell a failed test.
    report = yield
    setattr(item, f"keygate_report_{report.when}", report)
    return report


def stop_and_report(request, running: Server) -> None:
    """Stops the server; when the test failed, prints the tail of its log (pytest shows it)."""
    running.stop()
    report = getattr(request.node, "keygate_report_call", None)
    if report is not None and report.failed:
        print(f"--- keygate server log ({running.log_path}) ---\n{running.log_tail()}")


@pytest.fixture
def server(request, tmp_path):
    """A running `keygate serve` with `.base_url`, `.data_dir`, `.log_path` and `.admin()`."""
    running = start_server(keygate_bin(), tmp_path)
    try:
        yield running
    finally:
        stop_and_report(request, running)


@pytest.fixture
def make_server(request, tmp_path):
    """Starts `keygate serve <extra args>` over a fresh data directory; stops all at the end."""
    started: list[Server] = []

    def make(*extra_args: str) -> Server:
        running = start_server(keygate_bin(), tmp_path / f"server-{len(started) + 1}", extra_args)
        started.append(running)
        return running

    try:
        yield make
    finally:
        for running in started:
            stop_and_report(request, running)


@dataclass
class Account:
    """An account made by `keygate admin create-account`, with its owner's sign-in details."""

    account_id: str
    user_id: str
    api_key: str
    name: str
    email: str
    password: str
    first_name: str
    last_name: str

    @property
    def username(self) -> str:
        # The owner's username is the email, lower-cased.
        return self.email.lower()


def create_account(
    server: Server,
    name: str = "Acme Inc",
    email: str = "john@example.com",
    password: str = "correct horse battery staple",
    first_name: str = "John",
    last_name: str = "Doe",
) -> Account:
    out = server.admin(
        "create-account",
        "--name", name,
        "--email", email,
        "--password", password,
        "--first-name", first_name,
        "--last-name", last_name,
        "--json",
    )  # fmt: skip
    created = json.loads(out)
    return Account(
        account_id=created["account_id"],
        user_id=created["user_id"],
        api_key=created["api_key"],
        name=name,
        email=email,
        password=password,
        first_name=first_name,
        last_name=last_name,
    )


@pytest.fixture
def account(server) -> Account:
    """John Doe's account on `server`; `.api_key` is its first (admin) API key."""
    return create_account(server)
