"""Seed 000, "Getting Started with Audian API": its cURL, Python and Node.js code, run as printed.

Only the base URL (`https://api.audian.com:8443` → the test server) and the placeholders the
reader fills in change; see seed_snippets.py.
"""

import json

import requests
from seed_snippets import run_node, run_python, run_shell_json
from wire import assert_has_shape, describe, expect, expect_crossbar_error

# Step 3, "Using cURL", first command, and the response the seed shows for it.
CURL_GET_AUTH_TOKEN = """\
# Step 1: Get auth token
curl -X PUT https://api.audian.com:8443/v2/api_auth \\
-H "Content-Type: application/json" \\
-d '{"data": {"api_key": "YOUR_API_KEY"}}'
"""
AUTH_TOKEN_RESPONSE = """\
{
"auth_token": "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9...",
"data": {
"account_id": "account_abc123",
"owner_id": "user_xyz789"
},
"status": "success"
}
"""

# Step 3, "Using cURL", second command.
CURL_GET_ACCOUNT = """\
# Step 2: Use the auth token for API requests
curl -X GET "https://api.audian.com:8443/v2/accounts/{ACCOUNT_ID}" \\
-H "X-Auth-Token: {AUTH_TOKEN}" \\
-H "Accept: application/json"
"""

# Step 3, "Using Python".
PYTHON_AUTHENTICATE_AND_GET_ACCOUNT = """\
import requests

# Configuration
API_KEY = 'your_api_key_here'
BASE_URL = 'https://api.audian.com:8443/v2'

# Step 1: Authenticate
auth_response = requests.put(
f'{BASE_URL}/api_auth',
json={'data': {'api_key': API_KEY}}
)
auth_data = auth_response.json()

auth_token = auth_data['auth_token']
account_id = auth_data['data']['account_id']

print(f"Account ID: {account_id}")

# Step 2: Make API requests
headers = {
'X-Auth-Token': auth_token,
'Accept': 'application/json'
}

response = requests.get(
f'{BASE_URL}/accounts/{account_id}',
headers=headers
)

print(response.json())
"""

# Step 3, "Using Node.js".
NODE_AUTHENTICATE_AND_GET_ACCOUNT = """\
const axios = require('axios');

const API_KEY = process.env.AUDIAN_API_KEY || 'your_api_key_here';
const BASE_URL = 'https://api.audian.com:8443/v2';

async function main() {
// Step 1: Authenticate
const authResponse = await axios.put(
`${BASE_URL}/api_auth`,
{ data: { api_key: API_KEY } }
);

const authToken = authResponse.data.auth_token;
const accountId = authResponse.data.data.account_id;

console.log(`Account ID: ${accountId}`);

// Step 2: Make API requests
const response = await axios.get(
`${BASE_URL}/accounts/${accountId}`,
{
headers: {
'X-Auth-Token': authToken,
'Accept': 'application/json'
}
}
);

console.log(response.data);
}

main().catch(console.error);
"""

# Step 4, "Make Your First Request", and its expected response.
CURL_LIST_USERS = """\
curl -X GET "https://api.audian.com:8443/v2/accounts/{ACCOUNT_ID}/users?paginate=false" \\
-H "X-Auth-Token: {AUTH_TOKEN}" \\
-H "Accept: application/json"
"""
LIST_USERS_RESPONSE = """\
{
"auth_token": "eyJhbGciOiJSUzI1...",
"data": [
{
"id": "user_xyz789",
"first_name": "John",
"last_name": "Doe",
"email": "john@example.com",
"username": "johndoe"
}
],
"request_id": "req_abc123",
"status": "success"
}
"""

# The seeds' tokens are RS256 JWTs: the base64url of `{"alg":"RS256",` opens every one.
RS256_JWT_OPENING = "eyJhbGciOiJSUzI1NiIs"


def get_auth_token(server, account) -> dict:
    return run_shell_json(CURL_GET_AUTH_TOKEN, server.base_url, {"YOUR_API_KEY": account.api_key})


def test_curl_step_1_exchanges_the_api_key_for_the_documented_auth_token_response(server, account):
    body = get_auth_token(server, account)

    assert_has_shape(body, json.loads(AUTH_TOKEN_RESPONSE))
    assert body["auth_token"].startswith(RS256_JWT_OPENING), body
    assert body["data"]["account_id"] == account.account_id, body
    assert body["data"]["owner_id"] == account.user_id, body
    assert body["status"] == "success", body


def test_curl_step_2_reads_the_account_with_the_auth_token(server, account):
    auth = get_auth_token(server, account)

    body = run_shell_json(
        CURL_GET_ACCOUNT,
        server.base_url,
        {"{ACCOUNT_ID}": auth["data"]["account_id"], "{AUTH_TOKEN}": auth["auth_token"]},
    )

    assert body["status"] == "success", body
    assert body["data"]["id"] == account.account_id, body
    assert body["data"]["name"] == account.name, body
    assert body["auth_token"].startswith(RS256_JWT_OPENING), body
    assert body["request_id"], body


def test_python_snippet_authenticates_and_prints_the_account(server, account):
    printed, ran = run_python(
        PYTHON_AUTHENTICATE_AND_GET_ACCOUNT,
        server.base_url,
        {"your_api_key_here": account.api_key},
    )

    assert f"Account ID: {account.account_id}\n" in printed, printed
    expect(ran["auth_response"], 201)
    account_body = expect(ran["response"], 200)
    assert account_body["status"] == "success", describe(ran["response"])
    assert account_body["data"]["id"] == account.account_id, describe(ran["response"])
    assert repr(account_body) in printed, printed


def test_node_snippet_authenticates_with_axios_and_prints_the_account(server, account):
    output = run_node(
        NODE_AUTHENTICATE_AND_GET_ACCOUNT,
        server.base_url,
        env={"AUDIAN_API_KEY": account.api_key},
    )

    # main().catch(console.error) exits 0 even when a request fails, so the output is the proof.
    assert "Error" not in output, output
    assert f"Account ID: {account.account_id}\n" in output, output
    assert f"id: '{account.account_id}'" in output, output
    assert "status: 'success'" in output, output


def test_curl_step_4_lists_the_users_with_the_fields_of_the_expected_response(server, account):
    auth = get_auth_token(server, account)
    token = auth["auth_token"]
    # Seed 000's John Doe has the username "johndoe"; the owner's starts as the email.
    # POST updates an existing resource (seed 000's HTTP methods table).
    renamed = requests.post(
        server.url(f"/v2/accounts/{account.account_id}/users/{account.user_id}"),
        headers={"X-Auth-Token": token},
        json={"data": {"username": "johndoe"}},
    )
    expect(renamed, 200)

    body = run_shell_json(
        CURL_LIST_USERS,
        server.base_url,
        {"{ACCOUNT_ID}": account.account_id, "{AUTH_TOKEN}": token},
    )

    assert_has_shape(body, json.loads(LIST_USERS_RESPONSE))
    assert body["status"] == "success", body
    assert body["auth_token"].startswith(RS256_JWT_OPENING), body
    assert body["request_id"].startswith("req_"), body
    john = {key: body["data"][0][key] for key in json.loads(LIST_USERS_RESPONSE)["data"][0]}
    assert john == {
        "id": account.user_id,
        "first_name": "John",
        "last_name": "Doe",
        "email": "john@example.com",
        "username": "johndoe",
    }, body


def test_a_wrong_api_key_in_step_1_answers_unauthorized(server, account):
    # "Issue: 'Unauthorized' Response — verify your API key is correct."
    body = run_shell_json(CURL_GET_AUTH_TOKEN, server.base_url, {"YOUR_API_KEY": "not_a_real_key"})

    shown = {key: body.get(key) for key in ("error", "message", "status")}
    assert shown == {"error": "401", "message": "unauthorized", "status": "error"}, body
    # The same request again through requests, for the status line that curl does not print.
    sent = requests.put(
        server.url("/v2/api_auth"),
        headers={"Content-Type": "application/json"},
        data='{"data": {"api_key": "not_a_real_key"}}',
    )
    expect_crossbar_error(sent, 401, "unauthorized")


def test_a_body_not_wrapped_in_data_is_refused_with_a_400_envelope(server, account):
    # "Issue: Invalid Request Body — wrap your data in {"data": {...}}."
    unwrapped = requests.put(server.url("/v2/api_auth"), json={"api_key": account.api_key})
    expect_crossbar_error(unwrapped, 400, "invalid data")

    not_json = requests.put(
        server.url("/v2/api_auth"),
        headers={"Content-Type": "application/json"},
        data='{"data": {"api_key": ',
    )
    expect_crossbar_error(not_json, 400, "invalid data")


def test_every_v2_response_carries_an_x_request_id_header_equal_to_its_request_id(server, account):
    auth = requests.put(server.url("/v2/api_auth"), json={"data": {"api_key": account.api_key}})
    token = expect(auth, 201)["auth_token"]
    answers = [
        auth,
        requests.get(
            server.url(f"/v2/accounts/{account.account_id}"), headers={"X-Auth-Token": token}
        ),
        requests.get(
            server.url(f"/v2/accounts/{account.account_id}/users?paginate=false"),
            headers={"X-Auth-Token": token},
        ),
        requests.get(server.url(f"/v2/accounts/{account.account_id}")),
        requests.get(
            server.url(f"/v2/accounts/{account.account_id}"),
            headers={"X-Auth-Token": "not-a-token"},
        ),
        requests.put(server.url("/v2/api_auth"), json={}),
    ]

    seen = set()
    for answer in answers:
        request_id = answer.headers.get("X-Request-Id")
        assert request_id, f"no X-Request-Id:\n{describe(answer)}"
        assert answer.json().get("request_id") == request_id, describe(answer)
        seen.add(request_id)
    assert len(seen) == len(answers), "request ids repeat"
