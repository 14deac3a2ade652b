"""Keygate's OAuth 2.0 server driven by an independent client: authlib's OAuth2Session (the
requests integration), not our code. Access tokens are checked with PyJWT against the published
JWKS as RFC 9068 describes them.

Covered here: the client credentials grant with both client authentication methods,
introspection (RFC 7662) before and after revocation (RFC 7009), and the metadata document
(RFC 8414). The authorization code grant with PKCE, and refresh-token rotation after it, need
the dashboard's login and consent pages; their test with authlib comes with the dashboard
(until then they are covered by the Rust integration tests in crates/keygate/tests/it/oauth.rs).
"""

import os

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session
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
