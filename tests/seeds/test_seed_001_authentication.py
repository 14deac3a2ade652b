"""Seed 001, "Authentication": API key → auth token → X-Auth-Token, and the errors it documents.

The auth token is checked by PyJWT against the published JWKS, not by Keygate's own code, for
RS256 (the default), EdDSA (`--token-algorithm EdDSA`) and across a signing-key rotation.
"""

import hashlib
import json
import subprocess
import time

import jwt
import pytest
import requests
from conftest import create_account
from seed_snippets import run_shell_json
from wire import assert_has_shape, describe, expect, expect_crossbar_error

# Quick Start, Step 1, and the response of Step 2.
CURL_AUTHENTICATE = """\
curl -X PUT https://api.audian.com:8443/v2/api_auth \\
-H "Content-Type: application/json" \\
-d '{
"data": {
"api_key": "YOUR_API_KEY"
}
}'
"""
AUTHENTICATE_RESPONSE = """\
{
"auth_token": "eyJhbGciOiJSUzI1.........",
"data": {
"account_id": "your_account_id"
},
"status": "success"
}
"""

# Quick Start, Step 3: the account id and token come from shell variables.
CURL_LIST_USERS = """\
curl -X GET \\
"https://api.audian.com:8443/v2/accounts/${ACCOUNT_ID}/users" \\
-H "X-Auth-Token: ${AUTH_TOKEN}" \\
-H "Accept: application/json"
"""

# Authentication Errors.
UNAUTHORIZED_RESPONSE = """\
{
"error": "401",
"message": "unauthorized",
"status": "error"
}
"""
FORBIDDEN_RESPONSE = """\
{
"error": "403",
"message": "forbidden",
"status": "error"
}
"""

TOKEN_TTL_SECONDS = 3600
# Signing keys are reloaded by every node on a 0.5 s poll.
SIGNING_KEY_RELOAD_WAIT = 1.5
EXTRA_RELOAD_WAIT = 5.0


def api_auth(server, api_key: str) -> dict:
    answer = requests.put(server.url("/v2/api_auth"), json={"data": {"api_key": api_key}})
    return expect(answer, 201)


def get_account(server, account_id: str, token: str) -> requests.Response:
    return requests.get(
        server.url(f"/v2/accounts/{account_id}"),
        headers={"X-Auth-Token": token, "Accept": "application/json"},
    )


def published_keys(server) -> list[dict]:
    answer = requests.get(server.url("/.well-known/jwks.json"))
    keys = expect(answer, 200).get("keys")
    assert isinstance(keys, list) and keys, describe(answer)
    return keys


def verify_with_pyjwt(server, token: str, algorithm: str) -> tuple[dict, dict]:
    """The token's header and claims, once PyJWT has checked its signature against the JWKS."""
    header = jwt.get_unverified_header(token)
    assert header.get("alg") == algorithm, header
    assert header.get("kid"), f"no kid in the token header {header}"
    matching = [key for key in published_keys(server) if key.get("kid") == header["kid"]]
    assert len(matching) == 1, f"kid {header['kid']} is not published once: {matching}"
    claims = jwt.decode(
        token,
        key=jwt.PyJWK(matching[0]),
        algorithms=[algorithm],
        options={"require": ["iss", "exp", "iat"]},
    )
    return header, claims


def assert_documented_claims(claims: dict, auth: dict, account) -> None:
    assert isinstance(claims["iss"], str) and claims["iss"], claims
    assert claims["account_id"] == account.account_id, claims
    assert claims["owner_id"] == account.user_id, claims
    assert claims["method"] == auth["data"]["method"], (claims, auth)
    assert claims["exp"] - claims["iat"] == TOKEN_TTL_SECONDS, claims
    assert abs(claims["iat"] - time.time()) < 60, claims


def test_curl_step_1_returns_the_auth_token_and_account_id(server, account):
    body = run_shell_json(CURL_AUTHENTICATE, server.base_url, {"YOUR_API_KEY": account.api_key})

    assert_has_shape(body, json.loads(AUTHENTICATE_RESPONSE))
    assert body["auth_token"].startswith("eyJhbGciOiJSUzI1"), body
    assert body["data"]["account_id"] == account.account_id, body
    assert body["status"] == "success", body


def test_curl_step_3_lists_users_with_the_token_from_the_shell_variables(server, account):
    auth = run_shell_json(CURL_AUTHENTICATE, server.base_url, {"YOUR_API_KEY": account.api_key})

    body = run_shell_json(
        CURL_LIST_USERS,
        server.base_url,
        env={"ACCOUNT_ID": auth["data"]["account_id"], "AUTH_TOKEN": auth["auth_token"]},
    )

    assert body["status"] == "success", body
    assert [user["id"] for user in body["data"]] == [account.user_id], body
    assert body["data"][0]["email"] == account.email, body


def test_a_missing_or_invalid_token_answers_401_with_the_documented_body(server, account):
    documented = json.loads(UNAUTHORIZED_RESPONSE)
    token = api_auth(server, account.api_key)["auth_token"]
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    answers = [
        requests.get(server.url(f"/v2/accounts/{account.account_id}")),
        get_account(server, account.account_id, "not-a-token"),
        get_account(server, account.account_id, tampered),
        requests.put(server.url("/v2/api_auth"), json={"data": {"api_key": "ak_live_nope"}}),
    ]

    for answer in answers:
        body = expect_crossbar_error(answer, 401, "unauthorized")
        assert_has_shape(body, documented)


def test_a_token_for_another_account_answers_403_with_the_documented_body(server, account):
    other = create_account(server, name="Other Co", email="other@example.com")
    token = api_auth(server, account.api_key)["auth_token"]

    body = expect_crossbar_error(get_account(server, other.account_id, token), 403, "forbidden")

    assert_has_shape(body, json.loads(FORBIDDEN_RESPONSE))


def test_a_token_from_a_read_only_key_answers_403_when_it_tries_to_create(server, account):
    # "403 Forbidden — check that your API key has the required permissions."
    created = requests.post(
        server.url("/api/v1/auth/api-keys"),
        headers={"Authorization": f"Bearer {account.api_key}"},
        json={"name": "Read only", "scope": "read"},
    )
    token = api_auth(server, expect(created, 201)["key"])["auth_token"]

    expect(get_account(server, account.account_id, token), 200)
    create_user = requests.put(
        server.url(f"/v2/accounts/{account.account_id}/users"),
        headers={"X-Auth-Token": token},
        json={"data": {"first_name": "Jane", "last_name": "Roe", "email": "jane@example.com"}},
    )
    expect_crossbar_error(create_user, 403, "forbidden")


def test_user_credentials_md5_exchange_for_an_auth_token_like_an_api_key(server, account):
    credentials = hashlib.md5(f"{account.username}:{account.password}".encode()).hexdigest()

    answer = requests.put(
        server.url("/v2/user_auth"),
        json={"data": {"credentials": credentials, "account_name": account.name}},
    )

    body = expect(answer, 201)
    assert body["status"] == "success", describe(answer)
    assert body["data"]["account_id"] == account.account_id, describe(answer)
    assert body["data"]["owner_id"] == account.user_id, describe(answer)
    expect(get_account(server, account.account_id, body["auth_token"]), 200)

    wrong = hashlib.md5(f"{account.username}:wrong password".encode()).hexdigest()
    refused = requests.put(
        server.url("/v2/user_auth"),
        json={"data": {"credentials": wrong, "account_name": account.name}},
    )
    expect_crossbar_error(refused, 401, "unauthorized")


def test_the_auth_token_is_an_rs256_jwt_that_pyjwt_verifies_with_the_published_jwks(
    server, account
):
    auth = api_auth(server, account.api_key)
    token = auth["auth_token"]

    assert token.startswith("eyJhbGciOiJSUzI1NiIs"), token
    header, claims = verify_with_pyjwt(server, token, "RS256")
    assert_documented_claims(claims, auth, account)
    published = next(key for key in published_keys(server) if key["kid"] == header["kid"])
    assert published["kty"] == "RSA", published
    assert "d" not in published, "the JWKS publishes a private key"

    head, payload, signature = token.split(".")
    forged = jwt.utils.base64url_encode(
        json.dumps({**claims, "account_id": "acct_someone_else"}).encode()
    ).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        verify_with_pyjwt(server, f"{head}.{forged}.{signature}", "RS256")


def test_a_server_started_with_eddsa_signs_tokens_that_pyjwt_verifies(make_server):
    server = make_server("--token-algorithm", "EdDSA")
    account = create_account(server)

    auth = api_auth(server, account.api_key)

    header, claims = verify_with_pyjwt(server, auth["auth_token"], "EdDSA")
    assert_documented_claims(claims, auth, account)
    published = next(key for key in published_keys(server) if key["kid"] == header["kid"])
    assert (published["kty"], published["crv"]) == ("OKP", "Ed25519"), published
    expect(get_account(server, account.account_id, auth["auth_token"]), 200)


def test_rotating_the_signing_key_publishes_both_keys_and_old_tokens_keep_working(server, account):
    first = api_auth(server, account.api_key)["auth_token"]
    first_kid = jwt.get_unverified_header(first)["kid"]

    rotated = subprocess.run(
        [server.bin, "signing-keys", "rotate", "--data-dir", str(server.data_dir)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rotated.returncode == 0, f"rotate failed:\n{rotated.stderr}{rotated.stdout}"
    time.sleep(SIGNING_KEY_RELOAD_WAIT)
    # Normally the running server has picked the new key up by now; a loaded machine gets a
    # little longer before this counts as a failure.
    deadline = time.monotonic() + EXTRA_RELOAD_WAIT
    second = api_auth(server, account.api_key)["auth_token"]
    while jwt.get_unverified_header(second)["kid"] == first_kid and time.monotonic() < deadline:
        time.sleep(0.25)
        second = api_auth(server, account.api_key)["auth_token"]

    second_kid = jwt.get_unverified_header(second)["kid"]
    assert second_kid != first_kid, "tokens are still signed with the key from before the rotation"
    kids = {key["kid"] for key in published_keys(server)}
    assert {first_kid, second_kid} <= kids, kids
    for token in (first, second):
        _, claims = verify_with_pyjwt(server, token, "RS256")
        assert claims["account_id"] == account.account_id, claims
        expect(get_account(server, account.account_id, token), 200)


def test_logging_out_with_delete_token_auth_stops_that_token_at_once(server, account):
    token = api_auth(server, account.api_key)["auth_token"]
    other_session = api_auth(server, account.api_key)["auth_token"]
    expect(get_account(server, account.account_id, token), 200)

    logged_out = requests.delete(server.url("/v2/token_auth"), headers={"X-Auth-Token": token})
    assert expect(logged_out, 200)["status"] == "success", describe(logged_out)

    body = expect_crossbar_error(
        get_account(server, account.account_id, token), 401, "unauthorized"
    )
    assert_has_shape(body, json.loads(UNAUTHORIZED_RESPONSE))
    info = requests.get(server.url("/v2/token_auth"), headers={"X-Auth-Token": token})
    expect_crossbar_error(info, 401, "unauthorized")
    expect(get_account(server, account.account_id, other_session), 200)
