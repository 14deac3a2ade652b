"""Keygate's OAuth 2.0 server driven by an independent client: authlib's OAuth2Session (the
requests integration), not our code. Access tokens are checked with PyJWT against the published
JWKS as RFC 9068 describes them.

Covered here: the authorization code grant with PKCE through the real login and consent
pages (a `requests` session plays the browser), refresh-token rotation and reuse detection, the
client credentials grant with both client authentication methods, introspection (RFC 7662)
before and after revocation (RFC 7009), and the metadata document (RFC 8414).
"""

import html
import os
import re
from urllib.parse import urljoin

import jwt
import requests
import pytest
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.integrations.base_client.errors import OAuthError
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

# The test server speaks plain HTTP on 127.0.0.1; authlib refuses that unless told.
os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

REDIRECT = "https://partner.example.com/callback"


def register_client(server, account, scope="read write"):
    r = requests.post(
        server.url("/api/v1/oauth/clients"),
        headers={"Authorization": f"Bearer {account.api_key}"},
        json={"name": "Partner integration", "redirect_uris": [REDIRECT], "scope": scope},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["client_id"].startswith("kgc_")
    return body["client_id"], body["client_secret"]


def test_client_credentials_with_basic_auth_give_a_working_rfc_9068_token(server, account):
    client_id, secret = register_client(server, account)
    session = OAuth2Session(
        client_id, secret, token_endpoint_auth_method="client_secret_basic", scope="read write"
    )
    token = session.fetch_token(server.url("/oauth/token"), grant_type="client_credentials")
    assert token["token_type"].lower() == "bearer"
    assert token["scope"] == "read write"
    assert "refresh_token" not in token

    # The session sends it as a Bearer token; Keygate's API takes it like a key.
    me = session.get(server.url("/api/v1/auth/me"), timeout=10)
    assert me.status_code == 200, me.text
    assert me.json()["credential"] == "oauth_access_token"
    assert me.json()["account"]["id"] == account.account_id

    # RFC 9068: typ at+jwt, signed by a key of the JWKS, with the claims it lists.
    header = jwt.get_unverified_header(token["access_token"])
    assert header["typ"] == "at+jwt"
    jwks = jwt.PyJWKClient(server.url("/.well-known/jwks.json"))
    key = jwks.get_signing_key_from_jwt(token["access_token"])
    claims = jwt.decode(
        token["access_token"],
        key.key,
        algorithms=[header["alg"]],
        options={"verify_aud": False},
    )
    for claim in ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"]:
        assert claim in claims, claim
    assert claims["client_id"] == client_id
    assert claims["sub"] == client_id


def test_client_secret_post_and_a_narrower_scope(server, account):
    client_id, secret = register_client(server, account)
    session = OAuth2Session(
        client_id, secret, token_endpoint_auth_method="client_secret_post", scope="read"
    )
    token = session.fetch_token(server.url("/oauth/token"), grant_type="client_credentials")
    assert token["scope"] == "read"
    # A read token may read, not write.
    assert session.get(server.url("/api/v1/auth/api-keys"), timeout=10).status_code == 200
    r = session.post(
        server.url("/api/v1/auth/api-keys"), json={"name": "nope", "scope": "read"}, timeout=10
    )
    assert r.status_code == 403, r.text


def test_a_wrong_secret_is_invalid_client_with_401(server, account):
    client_id, _ = register_client(server, account)
    r = requests.post(
        server.url("/oauth/token"),
        data={"grant_type": "client_credentials"},
        auth=(client_id, "kgcs_wrong"),
        timeout=10,
    )
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    assert r.headers["Cache-Control"] == "no-store"


def test_introspection_before_and_after_revocation(server, account):
    client_id, secret = register_client(server, account)
    session = OAuth2Session(client_id, secret, scope="read")
    token = session.fetch_token(server.url("/oauth/token"), grant_type="client_credentials")
    access = token["access_token"]

    r = session.introspect_token(server.url("/oauth/introspect"), token=access)
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["active"] is True
    assert info["client_id"] == client_id
    assert info["scope"] == "read"
    assert info["token_type"] == "Bearer"
    assert info["exp"] > info["iat"]

    r = session.revoke_token(server.url("/oauth/revoke"), token=access, token_type_hint="access_token")
    assert r.status_code == 200, r.text

    r = session.introspect_token(server.url("/oauth/introspect"), token=access)
    assert r.json() == {"active": False}
    me = requests.get(
        server.url("/api/v1/auth/me"), headers={"Authorization": f"Bearer {access}"}, timeout=10
    )
    assert me.status_code == 401

    # Revoking what Keygate does not know is not an error (RFC 7009 §2.2).
    r = session.revoke_token(server.url("/oauth/revoke"), token="kgrt_not-a-token")
    assert r.status_code == 200


def test_the_metadata_document_is_valid_rfc_8414(server):
    r = requests.get(server.url("/.well-known/oauth-authorization-server"), timeout=10)
    assert r.status_code == 200
    metadata = AuthorizationServerMetadata(r.json())
    # Everything but the issuer, which without --oauth-issuer is the token issuer ("keygate").
    for check in [
        "validate_authorization_endpoint",
        "validate_token_endpoint",
        "validate_jwks_uri",
        "validate_scopes_supported",
        "validate_response_types_supported",
        "validate_grant_types_supported",
        "validate_token_endpoint_auth_methods_supported",
        "validate_revocation_endpoint",
        "validate_introspection_endpoint",
        "validate_code_challenge_methods_supported",
    ]:
        getattr(metadata, check)()
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["token_endpoint"] == server.url("/oauth/token")
    assert "password" not in metadata["grant_types_supported"]
    assert "implicit" not in metadata["grant_types_supported"]


def test_a_configured_issuer_passes_full_metadata_validation(make_server):
    issuer = "https://auth.example.com"
    running = make_server("--oauth-issuer", issuer)
    r = requests.get(running.url("/.well-known/oauth-authorization-server"), timeout=10)
    metadata = AuthorizationServerMetadata(r.json())
    metadata.validate()
    assert metadata["issuer"] == issuer
    assert metadata["token_endpoint"] == issuer + "/oauth/token"


def hidden_fields(page: str) -> dict:
    """The name/value pairs of a page's hidden inputs."""
    fields = {}
    for tag in re.findall(r"<input[^>]*>", page):
        name = re.search(r'name="([^"]*)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name and 'type="hidden"' in tag:
            fields[html.unescape(name.group(1))] = html.unescape(value.group(1) if value else "")
    return fields


def mail_link(server, address: str) -> str:
    """The link in the newest mail the file mailer wrote to `address`."""
    for path in sorted((server.data_dir / "mail").glob("*.eml"), reverse=True):
        text = path.read_bytes().decode()
        if f"To: {address}" in text:
            for word in text.split():
                if word.startswith(server.base_url):
                    return word
    raise AssertionError(f"no mail with a link to {address}")


def authorize_in_browser(server, account, authorization_url: str, decision="approve") -> str:
    """What a user does: open the URL, log in, allow. Returns where the browser is sent."""
    browser = requests.Session()
    r = browser.get(authorization_url, allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.text
    login_url = urljoin(server.base_url, r.headers["Location"])
    assert "/login?next=" in login_url

    def log_in():
        page = browser.get(login_url, timeout=10)
        assert page.status_code == 200
        form = hidden_fields(page.text)
        form.update({"email": account.email, "password": account.password})
        return browser.post(server.url("/login"), data=form, allow_redirects=False, timeout=10)

    r = log_in()
    if r.status_code == 403:
        # An account made with `keygate admin` has not verified its address yet: the login
        # mailed a link (to a file, without SMTP); following it verifies the address.
        assert browser.get(mail_link(server, account.email), timeout=10).status_code == 200
        r = log_in()
    assert r.status_code == 303, r.text
    assert r.headers["Location"].startswith("/oauth/authorize?")

    consent = browser.get(urljoin(server.base_url, r.headers["Location"]), timeout=10)
    assert consent.status_code == 200, consent.text
    assert "Partner integration" in consent.text
    assert "default-src 'self'" in consent.headers["Content-Security-Policy"]
    form = hidden_fields(consent.text)
    assert form.get("csrf_token"), "the consent form carries a CSRF token"

    # Without the token, or from another site, the decision is refused.
    forged = {k: v for k, v in form.items() if k != "csrf_token"}
    r = browser.post(
        server.url("/oauth/authorize"), data={**forged, "decision": "approve"},
        allow_redirects=False, timeout=10,
    )
    assert r.status_code == 403

    form["decision"] = decision
    r = browser.post(server.url("/oauth/authorize"), data=form, allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.text
    return r.headers["Location"]


def test_code_with_pkce_through_the_login_and_consent_pages_then_refresh_rotation(server, account):
    client_id, secret = register_client(server, account)
    session = OAuth2Session(
        client_id,
        secret,
        scope="read write",
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
    )
    verifier = generate_token(64)
    url, state = session.create_authorization_url(
        server.url("/oauth/authorize"), code_verifier=verifier
    )
    back = authorize_in_browser(server, account, url)
    assert back.startswith(REDIRECT + "?code=")
    assert f"state={state}" in back

    token = session.fetch_token(
        server.url("/oauth/token"), authorization_response=back, code_verifier=verifier
    )
    assert token["scope"] == "read write"
    me = session.get(server.url("/api/v1/auth/me"), timeout=10)
    assert me.status_code == 200, me.text
    assert me.json()["id"] == account.user_id
    assert me.json()["scope"] == "write"

    # The code is single-use: a second exchange fails and revokes what the first one issued.
    replay = OAuth2Session(client_id, secret, redirect_uri=REDIRECT)
    with pytest.raises(OAuthError) as refused:
        replay.fetch_token(
            server.url("/oauth/token"), authorization_response=back, code_verifier=verifier
        )
    assert refused.value.error == "invalid_grant"
    assert session.get(server.url("/api/v1/auth/me"), timeout=10).status_code == 401


def test_refresh_tokens_rotate_and_an_old_one_revokes_the_family(server, account):
    client_id, secret = register_client(server, account)
    session = OAuth2Session(
        client_id, secret, scope="read", redirect_uri=REDIRECT, code_challenge_method="S256"
    )
    verifier = generate_token(64)
    url, _ = session.create_authorization_url(server.url("/oauth/authorize"), code_verifier=verifier)
    back = authorize_in_browser(server, account, url)
    first = session.fetch_token(
        server.url("/oauth/token"), authorization_response=back, code_verifier=verifier
    )
    old_refresh = first["refresh_token"]

    second = session.refresh_token(server.url("/oauth/token"))
    assert second["refresh_token"] != old_refresh, "rotated"
    assert session.get(server.url("/api/v1/auth/me"), timeout=10).status_code == 200
    info = session.introspect_token(server.url("/oauth/introspect"), token=second["refresh_token"])
    assert info.json()["active"] is True

    stolen = OAuth2Session(client_id, secret)
    with pytest.raises(OAuthError) as refused:
        stolen.refresh_token(server.url("/oauth/token"), refresh_token=old_refresh)
    assert refused.value.error == "invalid_grant"

    # The whole family is gone: the current refresh token and access token too.
    info = session.introspect_token(server.url("/oauth/introspect"), token=second["refresh_token"])
    assert info.json() == {"active": False}
    assert session.get(server.url("/api/v1/auth/me"), timeout=10).status_code == 401
    with pytest.raises(OAuthError):
        session.refresh_token(server.url("/oauth/token"))


def test_a_user_who_denies_sends_the_client_access_denied(server, account):
    client_id, secret = register_client(server, account)
    session = OAuth2Session(client_id, secret, redirect_uri=REDIRECT, code_challenge_method="S256")
    url, state = session.create_authorization_url(
        server.url("/oauth/authorize"), code_verifier=generate_token(64)
    )
    back = authorize_in_browser(server, account, url, decision="deny")
    assert back.startswith(REDIRECT + "?error=access_denied")
    assert back.endswith(f"&state={state}")
    consents = requests.get(
        server.url("/api/v1/oauth/consents"),
        headers={"Authorization": f"Bearer {account.api_key}"},
        timeout=10,
    )
    assert consents.json() == []
