"""Assertions on HTTP answers, in the shapes the seeds show; failures print the whole answer."""

import requests


def describe(response: requests.Response) -> str:
    request = response.request
    headers = "".join(f"{name}: {value}\n" for name, value in response.headers.items())
    return f"{request.method} {request.url} -> {response.status_code}\n{headers}\n{response.text}"


def expect(response: requests.Response, status: int) -> dict | list:
    """The JSON body of a response that must have `status`."""
    assert response.status_code == status, f"expected {status}, got:\n{describe(response)}"
    try:
        return response.json()
    except ValueError as e:
        raise AssertionError(f"the body is not JSON:\n{describe(response)}") from e


def expect_crossbar_error(response: requests.Response, status: int, message: str) -> dict:
    """A /v2 error (seed 001): `{"error": "<code as text>", "message": …, "status": "error"}`."""
    body = expect(response, status)
    shown = {key: body.get(key) for key in ("error", "message", "status")}
    assert shown == {"error": str(status), "message": message, "status": "error"}, describe(
        response
    )
    assert body.get("request_id") == response.headers.get("X-Request-Id"), describe(response)
    return body


def expect_native_error(response: requests.Response, status: int, code: str) -> dict:
    """An /api/v1 error: `{"error": {"code": …, "message": "…"}}` (seeds 002 and 003)."""
    body = expect(response, status)
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"no error object:\n{describe(response)}"
    assert error.get("code") == code, describe(response)
    assert isinstance(error.get("message"), str) and error["message"], describe(response)
    return error


def assert_has_shape(actual, documented, where: str = "body") -> None:
    """Every key the seed's documented response shows is in `actual`, at the same place.

    Values are illustrative in the seeds (`"account_abc123"`), so only the structure is compared:
    objects by their keys, lists by their first element, strings and numbers by their type.
    """
    if isinstance(documented, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        for key, value in documented.items():
            assert key in actual, f"{where}: no {key!r} in {actual!r}"
            assert_has_shape(actual[key], value, f"{where}.{key}")
    elif isinstance(documented, list):
        assert isinstance(actual, list), f"{where}: expected a list, got {actual!r}"
        if documented:
            assert actual, f"{where}: expected a non-empty list"
            assert_has_shape(actual[0], documented[0], f"{where}[0]")
    elif isinstance(documented, str):
        assert isinstance(actual, str), f"{where}: expected a string, got {actual!r}"
