"""Runs the seeds' own code, as their readers would, against a local Keygate.

A seed's snippet is kept in its test as a verbatim string. Before it runs, exactly two kinds of
text change, both in `localize`: the seed's base URL (`https://api.audian.com:8443`,
`https://api.audiopod.ai`) becomes the test server's `http://127.0.0.1:PORT`, and a placeholder
that the seed asks its reader to fill in (`YOUR_API_KEY`, `{ACCOUNT_ID}`, `'your_api_key_here'`,
`"key_id_to_revoke"`, …) becomes its value. Values that a snippet reads from the environment
(`${AUTH_TOKEN}` in a shell, `os.getenv('AUDIOPOD_API_KEY')`, `process.env.AUDIAN_API_KEY`) are
given through the environment and the code is not touched at all.

Seed 002 was published through a renderer that put spaces between tokens (`f "…{ x }"`) and
dropped indentation, so its Python is not valid as printed; its test restores the whitespace by
hand and `assert_only_whitespace_differs` proves that nothing but whitespace was changed.
"""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import pytest

SEED_BASE_URLS = ("https://api.audian.com:8443", "https://api.audiopod.ai")
SNIPPET_TIMEOUT = 60.0
REPO_ROOT = Path(__file__).resolve().parents[2]
# Git-ignored (under .venv), so that axios is installed once and never committed.
NODE_CACHE = REPO_ROOT / ".venv" / "node"


def localize(snippet: str, base_url: str, placeholders: dict[str, str] | None = None) -> str:
    """The snippet with the seed's base URL and the given placeholders replaced, nothing else.

    Every placeholder must occur in the snippet, so that a typo cannot turn the substitution
    into a silent no-op.
    """
    text = snippet
    for seed_url in SEED_BASE_URLS:
        text = text.replace(seed_url, base_url)
    for placeholder, value in (placeholders or {}).items():
        assert placeholder in text, f"placeholder {placeholder!r} is not in the snippet:\n{snippet}"
        text = text.replace(placeholder, value)
    return text


def _environment(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    # The test server is on loopback; a proxy configured for the machine must not see it.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


def run_shell(snippet: str, base_url: str, placeholders=None, env=None) -> str:
    """Runs a curl snippet with `bash -c` and returns its stdout (curl prints the body)."""
    script = localize(snippet, base_url, placeholders)
    result = subprocess.run(
        ["bash", "-c", script],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SNIPPET_TIMEOUT,
        env=_environment(env),
    )
    assert result.returncode == 0, (
        f"the seed's shell snippet exited with {result.returncode}\n--- script ---\n{script}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
    return result.stdout


def run_shell_json(snippet: str, base_url: str, placeholders=None, env=None) -> dict:
    """Runs a curl snippet and parses what it printed as JSON."""
    out = run_shell(snippet, base_url, placeholders, env)
    try:
        return json.loads(out)
    except json.JSONDecodeError as e:
        raise AssertionError(
            f"the seed's curl printed something that is not JSON ({e}):\n{out}"
        ) from e


def run_python(snippet: str, base_url: str, placeholders=None, env=None) -> tuple[str, dict]:
    """Executes a Python snippet; returns what it printed and its global variables."""
    source = localize(snippet, base_url, placeholders)
    code = compile(source, "<seed snippet>", "exec")
    namespace: dict = {"__name__": "__seed__"}
    printed = io.StringIO()
    try:
        with mock.patch.dict(os.environ, env or {}), contextlib.redirect_stdout(printed):
            exec(code, namespace)
    except Exception as e:
        raise AssertionError(
            f"the seed's Python raised {type(e).__name__}: {e}\n--- source ---\n{source}\n"
            f"--- printed so far ---\n{printed.getvalue()}"
        ) from e
    return printed.getvalue(), namespace


def node_modules_with_axios() -> Path:
    """A node_modules with axios 1.x in it, installed on first use; skips without node or npm."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not on PATH, so seed 000's Node.js snippet cannot run")
    modules = NODE_CACHE / "node_modules"
    if not (modules / "axios" / "package.json").exists():
        NODE_CACHE.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["npm", "install", "--prefix", str(NODE_CACHE), "--no-audit", "--no-fund", "axios@1"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (
            f"npm install axios@1 into {NODE_CACHE} failed:\n{result.stdout}{result.stderr}"
        )
    return modules


def run_node(snippet: str, base_url: str, placeholders=None, env=None) -> str:
    """Runs a Node.js snippet with axios on NODE_PATH; returns stdout and stderr together."""
    modules = node_modules_with_axios()
    script = localize(snippet, base_url, placeholders)
    result = subprocess.run(
        ["node", "-e", script],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SNIPPET_TIMEOUT,
        env=_environment({"NODE_PATH": str(modules), **(env or {})}),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"the seed's Node.js exited with {result.returncode}\n--- script ---\n{script}\n"
        f"--- output ---\n{output}"
    )
    return output


def assert_only_whitespace_differs(published: str, restored: str) -> None:
    """Fails unless `restored` is `published` with only spaces, tabs and newlines changed."""
    squash = lambda text: re.sub(r"\s+", "", text)  # noqa: E731
    assert squash(published) == squash(restored), (
        "the restored snippet changes more than whitespace:\n"
        f"--- published ---\n{published}\n--- restored ---\n{restored}"
    )
