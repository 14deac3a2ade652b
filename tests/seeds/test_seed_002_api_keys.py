"""Seed 002, "AudioPod AI API keys": Bearer keys, programmatic key management, revocation.

The seed's SDK (`from audiopod import Client`) is the host service's own library; what Keygate
owns is the HTTP under it, which the "Programmatic API Key Management" snippet uses directly.
"""

import requests
from seed_snippets import assert_only_whitespace_differs, run_python
from wire import describe, expect, expect_crossbar_error, expect_native_error

# "Programmatic API Key Management", exactly as the seed prints it: its renderer put spaces
# between tokens and dropped the indentation, so this text is not valid Python.
PUBLISHED_KEY_MANAGEMENT = """\
import requests
import os
# Use your existing API key to manage other keys
headers = {
"Authorization" : f "Bearer { os.getenv( 'AUDIOPOD_API_KEY' ) } "
}
# Create a new API key
create_response = requests.post(
"https://api.audiopod.ai/api/v1/auth/api-keys" ,
headers = headers,
json = {
"name" : "Production API Key" ,
"description" : "Key for production environment"
}
)
if create_response.status_code == 201 :
new_key = create_response.json()
print ( f "Created API key: { new_key[ 'key' ] } " )
print ( f "Key ID: { new_key[ 'id' ] } " )
# List all API keys
list_response = requests.get(
"https://api.audiopod.ai/api/v1/auth/api-keys" ,
headers = headers,
params = { "status" : "active" }
)
if list_response.status_code == 200 :
keys = list_response.json()
for key in keys:
print ( f "Key: { key[ 'name' ] } (ID: { key[ 'id' ] } ) - Status: { key[ 'status' ] } " )
# Revoke an API key
key_id = "key_id_to_revoke"
revoke_response = requests.delete(
f "https://api.audiopod.ai/api/v1/auth/api-keys/ { key_id } " ,
headers = headers
)
if revoke_response.status_code == 200 :
print ( f "API key { key_id } revoked successfully" )
"""

# The same code with its whitespace restored (checked below to differ in nothing else).
KEY_MANAGEMENT = """\
import requests
import os

# Use your existing API key to manage other keys
headers = {
    "Authorization": f"Bearer {os.getenv('AUDIOPOD_API_KEY')}"
}

# Create a new API key
create_response = requests.post(
    "https://api.audiopod.ai/api/v1/auth/api-keys",
    headers=headers,
    json={
        "name": "Production API Key",
        "description": "Key for production environment"
    }
)

if create_response.status_code == 201:
    new_key = create_response.json()
    print(f"Created API key: {new_key['key']}")
    print(f"Key ID: {new_key['id']}")

# List all API keys
list_response = requests.get(
    "https://api.audiopod.ai/api/v1/auth/api-keys",
    headers=headers,
    params={"status": "active"}
)

if list_response.status_code == 200:
    keys = list_response.json()
    for key in keys:
        print(f"Key: {key['name']} (ID: {key['id']}) - Status: {key['status']}")

# Revoke an API key
key_id = "key_id_to_revoke"
revoke_response = requests.delete(
    f"https://api.audiopod.ai/api/v1/auth/api-keys/{key_id}",
    headers=headers
)

if revoke_response.status_code == 200:
    print(f"API key {key_id} revoked successfully")
"""

# "Common Authentication Errors", missing or invalid API key.
INVALID_KEY_BODY = {"error": {"code": "unauthorized", "message": "Invalid API key provided"}}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def create_key(server, admin_key: str, name: str, **fields) -> dict:
    answer = requests.post(
        server.url("/api/v1/auth/api-keys"),
        headers=bearer(admin_key),
        json={"name": name, **fields},
    )
    return expect(answer, 201)


def revoke_key(server, admin_key: str, key_id: str) -> dict:
    answer = requests.delete(
        server.url(f"/api/v1/auth/api-keys/{key_id}"), headers=bearer(admin_key)
    )
    return expect(answer, 200)


def who_am_i(server, key: str) -> requests.Response:
    return requests.get(server.url("/api/v1/auth/me"), headers=bearer(key))


def test_the_restored_key_management_snippet_differs_from_the_published_one_only_in_whitespace():
    assert_only_whitespace_differs(PUBLISHED_KEY_MANAGEMENT, KEY_MANAGEMENT)


def test_key_management_snippet_creates_lists_and_revokes_keys_as_it_prints(server, account):
    # "Key Rotation": the key the snippet revokes is an older one that still works until then.
    old = create_key(server, account.api_key, "Old key")
    expect(who_am_i(server, old["key"]), 200)

    printed, ran = run_python(
        KEY_MANAGEMENT,
        server.base_url,
        {"key_id_to_revoke": old["id"]},
        env={"AUDIOPOD_API_KEY": account.api_key},
    )

    expect(ran["create_response"], 201)
    expect(ran["list_response"], 200)
    expect(ran["revoke_response"], 200)
    new_key = ran["new_key"]
    lines = printed.splitlines()
    assert lines[:2] == [f"Created API key: {new_key['key']}", f"Key ID: {new_key['id']}"], printed
    assert new_key["key"].startswith("ak_live_"), new_key
    assert f"Key: Production API Key (ID: {new_key['id']}) - Status: active" in lines, printed
    assert f"Key: Old key (ID: {old['id']}) - Status: active" in lines, printed
    assert lines[-1] == f"API key {old['id']} revoked successfully", printed

    # "Revoking an API key immediately stops all requests using that key."
    expect_native_error(who_am_i(server, old["key"]), 401, "unauthorized")
    assert expect(who_am_i(server, new_key["key"]), 200)["key"]["id"] == new_key["id"]
    active = requests.get(
        server.url("/api/v1/auth/api-keys"),
        headers=bearer(account.api_key),
        params={"status": "active"},
    )
    assert old["id"] not in {key["id"] for key in expect(active, 200)}, describe(active)
    revoked = requests.get(
        server.url("/api/v1/auth/api-keys"),
        headers=bearer(account.api_key),
        params={"status": "revoked"},
    )
    statuses = {key["id"]: key["status"] for key in expect(revoked, 200)}
    assert statuses == {old["id"]: "revoked"}, describe(revoked)


def test_a_new_api_key_is_shown_once_and_never_again(server, account):
    created = create_key(server, account.api_key, "Development", description="Laptop")
    plaintext = created["key"]

    answers = [
        requests.get(server.url("/api/v1/auth/api-keys"), headers=bearer(account.api_key)),
        requests.get(
            server.url(f"/api/v1/auth/api-keys/{created['id']}"), headers=bearer(account.api_key)
        ),
        who_am_i(server, plaintext),
    ]

    for answer in answers:
        expect(answer, 200)
        assert plaintext not in answer.text, f"the key is shown again:\n{describe(answer)}"


def test_a_new_api_key_has_full_access_to_the_account(server, account):
    # "Currently, all API keys have full access to your account."
    made = create_key(server, account.api_key, "Production API Key")

    child = create_key(server, made["key"], "Made by the new key")
    assert revoke_key(server, made["key"], child["id"])["status"] == "revoked"
    assert expect(who_am_i(server, made["key"]), 200)["scope"] == "admin"


def test_the_bearer_key_identifies_the_user_by_email(server, account):
    # The SDK's get_user_info() prints f"Authenticated as: {user_info['email']}".
    user_info = expect(who_am_i(server, account.api_key), 200)

    assert user_info["email"] == account.email, user_info
    assert user_info["id"] == account.user_id, user_info


def test_an_invalid_or_missing_api_key_answers_the_documented_unauthorized_body(server, account):
    forged = account.api_key[:-1] + ("A" if not account.api_key.endswith("A") else "B")
    for key in ("your_api_key_here", forged, "ak_live_" + "x" * 40):
        answer = who_am_i(server, key)
        assert expect(answer, 401) == INVALID_KEY_BODY, describe(answer)

    missing = requests.get(server.url("/api/v1/auth/me"))
    expect_native_error(missing, 401, "unauthorized")


def test_a_revoked_key_is_refused_on_the_very_next_request(server, account):
    key = create_key(server, account.api_key, "Mobile App")
    expect(who_am_i(server, key["key"]), 200)

    assert revoke_key(server, account.api_key, key["id"])["status"] == "revoked"

    expect_native_error(who_am_i(server, key["key"]), 401, "unauthorized")
    exchange = requests.put(server.url("/v2/api_auth"), json={"data": {"api_key": key["key"]}})
    expect_crossbar_error(exchange, 401, "unauthorized")


def test_tokens_minted_from_a_key_stop_working_when_the_key_is_revoked(server, account):
    key = create_key(server, account.api_key, "Staging")
    crossbar = requests.put(server.url("/v2/api_auth"), json={"data": {"api_key": key["key"]}})
    crossbar_token = expect(crossbar, 201)["auth_token"]
    native = requests.post(server.url("/api/v1/auth/token"), headers=bearer(key["key"]))
    native_token = expect(native, 200)["token"]

    def read_account(token):
        return requests.get(
            server.url(f"/v2/accounts/{account.account_id}"), headers={"X-Auth-Token": token}
        )

    expect(read_account(crossbar_token), 200)
    expect(read_account(native_token), 200)
    expect(who_am_i(server, native_token), 200)

    revoke_key(server, account.api_key, key["id"])

    expect_crossbar_error(read_account(crossbar_token), 401, "unauthorized")
    expect_crossbar_error(read_account(native_token), 401, "unauthorized")
    expect_native_error(who_am_i(server, native_token), 401, "unauthorized")
    expect_native_error(who_am_i(server, crossbar_token), 401, "unauthorized")
