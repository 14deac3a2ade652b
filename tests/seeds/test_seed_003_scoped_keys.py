"""Seed 003, "API & Developer Resources": scoped Bearer keys and the error format, on /api/v1.

"Keys can be scoped to specific permissions: read-only (GET requests), read-write (GET, POST,
PUT, DELETE), admin (all operations including settings)." Keygate's scopes are `read`, `write`
and `admin`. The seed's `/api/posts` routes belong to the host service (Keygate's gateway puts
them behind a key); here the same rules are checked on Keygate's own API.

The seed writes error codes in capitals (`INVALID_INPUT`); Keygate's native API uses the lower
snake case of seed 002 (`unauthorized`, `forbidden`), so `invalid_input`.
"""

import requests
from wire import describe, expect, expect_native_error

KEYS = "/api/v1/auth/api-keys"


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def scoped_key(server, account, scope: str) -> str:
    answer = requests.post(
        server.url(KEYS),
        headers=bearer(account.api_key),
        json={"name": f"{scope} key", "scope": scope},
    )
    created = expect(answer, 201)
    assert created["scope"] == scope, describe(answer)
    return created["key"]


def spare_key_id(server, account) -> str:
    answer = requests.post(
        server.url(KEYS), headers=bearer(account.api_key), json={"name": "Spare"}
    )
    return expect(answer, 201)["id"]


def test_a_read_only_key_can_get_but_not_post_patch_or_delete(server, account):
    read = scoped_key(server, account, "read")
    spare = spare_key_id(server, account)

    listed = requests.get(server.url(KEYS), headers=bearer(read))
    assert isinstance(expect(listed, 200), list), describe(listed)
    expect(requests.get(server.url(f"{KEYS}/{spare}"), headers=bearer(read)), 200)
    expect(requests.get(server.url("/api/v1/auth/me"), headers=bearer(read)), 200)

    refused = [
        requests.post(server.url(KEYS), headers=bearer(read), json={"name": "Not allowed"}),
        requests.patch(
            server.url(f"{KEYS}/{spare}"), headers=bearer(read), json={"name": "Renamed"}
        ),
        requests.delete(server.url(f"{KEYS}/{spare}"), headers=bearer(read)),
    ]
    for answer in refused:
        expect_native_error(answer, 403, "forbidden")
    still_active = requests.get(server.url(f"{KEYS}/{spare}"), headers=bearer(account.api_key))
    assert expect(still_active, 200)["status"] == "active", describe(still_active)


def test_a_read_write_key_can_get_post_patch_and_delete(server, account):
    write = scoped_key(server, account, "write")

    expect(requests.get(server.url(KEYS), headers=bearer(write)), 200)
    created = requests.post(
        server.url(KEYS), headers=bearer(write), json={"name": "By a write key"}
    )
    made = expect(created, 201)
    renamed = requests.patch(
        server.url(f"{KEYS}/{made['id']}"), headers=bearer(write), json={"name": "Renamed"}
    )
    assert expect(renamed, 200)["name"] == "Renamed", describe(renamed)
    revoked = requests.delete(server.url(f"{KEYS}/{made['id']}"), headers=bearer(write))
    assert expect(revoked, 200)["status"] == "revoked", describe(revoked)


def test_only_an_admin_key_can_change_account_settings(server, account):
    settings = server.url(f"/api/v1/accounts/{account.account_id}")

    for scope in ("read", "write"):
        key = scoped_key(server, account, scope)
        refused = requests.patch(
            settings, headers=bearer(key), json={"name": "Renamed by " + scope}
        )
        expect_native_error(refused, 403, "forbidden")

    admin = scoped_key(server, account, "admin")
    changed = requests.patch(settings, headers=bearer(admin), json={"name": "Acme Renamed"})
    assert expect(changed, 200)["name"] == "Acme Renamed", describe(changed)


def test_a_key_cannot_create_a_key_with_more_scope_than_its_own(server, account):
    write = scoped_key(server, account, "write")

    refused = requests.post(
        server.url(KEYS), headers=bearer(write), json={"name": "Escalation", "scope": "admin"}
    )

    expect_native_error(refused, 403, "forbidden")


def test_input_of_the_wrong_type_answers_400_with_the_field_in_details(server, account):
    cases = {
        "name": {"name": 5},
        "scope": {"name": "Bad scope", "scope": "superuser"},
        "description": {"name": "Bad description", "description": ["not", "a", "string"]},
    }
    for field, body in cases.items():
        answer = requests.post(server.url(KEYS), headers=bearer(account.api_key), json=body)
        error = expect_native_error(answer, 400, "invalid_input")
        details = error.get("details")
        assert isinstance(details, dict), describe(answer)
        assert details.get("field") == field, describe(answer)
        assert isinstance(details.get("reason"), str) and details["reason"], describe(answer)


def test_a_missing_required_field_is_named_in_details(server, account):
    # The seed's own example: a missing caption answers
    # {"error": {"code": …, "message": "Caption is required",
    #            "details": {"field": "caption", "reason": "Field is required"}}}
    for body in ({"name": ""}, {}, {"description": "No name"}):
        answer = requests.post(server.url(KEYS), headers=bearer(account.api_key), json=body)
        error = expect_native_error(answer, 400, "invalid_input")
        assert error.get("details", {}).get("field") == "name", describe(answer)
        assert isinstance(error["details"].get("reason"), str), describe(answer)


def test_the_documented_status_codes_are_answered(server, account):
    admin = bearer(account.api_key)
    created = requests.post(server.url(KEYS), headers=admin, json={"name": "Codes"})
    expect(created, 201)
    expect(requests.get(server.url(KEYS), headers=admin), 200)
    expect_native_error(
        requests.post(server.url(KEYS), headers=admin, json={"name": 1}), 400, "invalid_input"
    )
    expect_native_error(
        requests.get(server.url(KEYS), headers=bearer("sk_prod_abc123xyz")), 401, "unauthorized"
    )
    read = scoped_key(server, account, "read")
    expect_native_error(
        requests.post(server.url(KEYS), headers=bearer(read), json={"name": "x"}), 403, "forbidden"
    )
    missing = requests.get(
        server.url(f"{KEYS}/key_00000000000000000000000000000000"), headers=admin
    )
    expect_native_error(missing, 404, "not_found")
