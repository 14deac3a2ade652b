//! Bad input gets a 4xx in the documented body: never a 500, never a panic.

use reqwest::Method;
use serde_json::json;

use crate::harness::{Backend, TestServer};

async fn server() -> TestServer {
    TestServer::start(Backend::Sqlite).await.expect("sqlite")
}

fn assert_error_body(r: &crate::harness::Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{}", r.body);
    assert!(r.body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn malformed_json_is_invalid_input() {
    let srv = server().await;
    let acme = srv.account("Acme").await;
    let r = srv
        .client
        .post(format!("{}/api/v1/auth/api-keys", srv.base))
        .bearer_auth(&acme.key)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .expect("send");
    assert_error_body(&TestServer::read(r).await, 400, "invalid_input");
}

#[tokio::test]
async fn a_wrong_type_names_the_field() {
    let srv = server().await;
    let acme = srv.account("Acme").await;
    let r = srv
        .send(
            Method::POST,
            "/api/v1/auth/api-keys",
            Some(&acme.key),
            Some(json!({"name": 5})),
        )
        .await;
    assert_error_body(&r, 400, "invalid_input");
    assert_eq!(r.body["error"]["details"]["field"], "name");
    let r = srv
        .send(
            Method::POST,
            "/api/v1/auth/api-keys",
            Some(&acme.key),
            Some(json!({"description": "no name"})),
        )
        .await;
    assert_error_body(&r, 400, "invalid_input");
    let r = srv
        .send(
            Method::POST,
            "/api/v1/auth/api-keys",
            Some(&acme.key),
            Some(json!([1, 2])),
        )
        .await;
    assert_error_body(&r, 400, "invalid_input");
}

#[tokio::test]
async fn an_unknown_scope_or_field_is_invalid_input() {
    let srv = server().await;
    let acme = srv.account("Acme").await;
    let r = srv
        .send(
            Method::POST,
            "/api/v1/auth/api-keys",
            Some(&acme.key),
            Some(json!({"name": "a", "scope": "owner"})),
        )
        .await;
    assert_error_body(&r, 400, "invalid_input");
    assert_eq!(r.body["error"]["details"]["field"], "scope");
    let r = srv
        .send(
            Method::POST,
            "/api/v1/auth/api-keys",
            Some(&acme.key),
            Some(json!({"name": "a", "scopes": "read"})),
        )
        .await;
    assert_error_body(&r, 400, "invalid_input");
    let r = srv
        .send(
            Method::POST,
            "/api/v1/auth/api-keys",
            Some(&acme.key),
            Some(json!({"name": "a", "environment": "prod"})),
        )
        .await;
    assert_eq!(r.body["error"]["details"]["field"], "environment");
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_refused_with_the_error_body() {
    let srv = server().await;
    let acme = srv.account("Acme").await;
    let big = json!({"name": "a", "description": "x".repeat(1024 * 1024 + 10)});
    let r = srv
        .send(
            Method::POST,
            "/api/v1/auth/api-keys",
            Some(&acme.key),
            Some(big),
        )
        .await;
    assert_error_body(&r, 413, "invalid_input");
}

#[tokio::test]
async fn absurd_path_ids_are_not_found() {
    let srv = server().await;
    let acme = srv.account("Acme").await;
    for id in [
        "nope",
        "key_",
        "key_%00",
        "..%2F..%2Fetc",
        &"9".repeat(5000),
        "key_ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ",
        "%F0%9F%92%A9",
    ] {
        let r = srv
            .get(&format!("/api/v1/auth/api-keys/{id}"), &acme.key)
            .await;
        assert_error_body(&r, 404, "not_found");
        let r = srv
            .get(&format!("/api/v1/accounts/{id}/users/{id}"), &acme.key)
            .await;
        assert_error_body(&r, 404, "not_found");
    }
}

/// `GET /api/v1/auth/me` with one header set as given.
async fn me_with_header(
    srv: &TestServer,
    name: &str,
    value: reqwest::header::HeaderValue,
) -> crate::harness::Resp {
    let r = srv
        .client
        .get(format!("{}/api/v1/auth/me", srv.base))
        .header(name, value)
        .send()
        .await
        .expect("send");
    TestServer::read(r).await
}

#[tokio::test]
async fn oversized_or_non_utf8_credentials_are_unauthorized() {
    use reqwest::header::HeaderValue;
    let srv = server().await;
    let huge = format!("Bearer ak_live_{}", "a".repeat(64 * 1024));
    for (name, value) in [
        (
            "authorization",
            HeaderValue::from_str(&huge).expect("ascii"),
        ),
        (
            "authorization",
            HeaderValue::from_bytes(b"Bearer ak_live_\xff\xfe").expect("opaque header"),
        ),
        ("x-api-key", HeaderValue::from_static("")),
        ("authorization", HeaderValue::from_static("Bearer")),
    ] {
        assert_error_body(
            &me_with_header(&srv, name, value).await,
            401,
            "unauthorized",
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_with_the_error_body() {
    let srv = server().await;
    let acme = srv.account("Acme").await;
    let r = srv.get("/api/v1/nothing-here", &acme.key).await;
    assert_error_body(&r, 404, "not_found");
    let r = srv
        .send(Method::PUT, "/api/v1/auth/me", Some(&acme.key), None)
        .await;
    assert_error_body(&r, 405, "method_not_allowed");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_plain_client_id_is_kept() {
    let srv = server().await;
    let r = srv
        .client
        .get(format!("{}/healthz", srv.base))
        .send()
        .await
        .expect("send");
    assert!(r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .starts_with("req_"));
    let r = srv
        .client
        .get(format!("{}/healthz", srv.base))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .expect("send");
    assert_eq!(r.headers()["x-request-id"], "trace-42");
    let r = srv
        .client
        .get(format!("{}/healthz", srv.base))
        .header("x-request-id", "a b<script>")
        .send()
        .await
        .expect("send");
    assert_ne!(r.headers()["x-request-id"], "a b<script>");
}

#[tokio::test]
async fn health_readiness_and_the_openapi_document_cover_every_route() {
    let srv = server().await;
    assert_eq!(
        srv.client
            .get(format!("{}/healthz", srv.base))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    let ready: serde_json::Value = srv
        .client
        .get(format!("{}/readyz", srv.base))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["database"], "sqlite");
    let doc: serde_json::Value = srv
        .client
        .get(format!("{}/openapi.json", srv.base))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/api/v1/auth/me", &["get"][..]),
        ("/api/v1/auth/api-keys", &["get", "post"]),
        ("/api/v1/auth/api-keys/{id}", &["get", "patch", "delete"]),
        ("/api/v1/auth/api-keys/{id}/roll", &["post"]),
        ("/api/v1/accounts", &["get", "post"]),
        ("/api/v1/accounts/{id}", &["get", "patch", "delete"]),
        ("/api/v1/accounts/{id}/users", &["get", "post"]),
        (
            "/api/v1/accounts/{id}/users/{user_id}",
            &["get", "patch", "delete"],
        ),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/openapi.json", &["get"]),
    ] {
        for m in methods {
            assert!(
                paths.get(path).and_then(|p| p.get(*m)).is_some(),
                "{m} {path} missing from the OpenAPI document"
            );
        }
    }
}

#[tokio::test]
async fn a_missing_field_is_named_in_the_details() {
    let srv = server().await;
    let acme = srv.account("Acme").await;
    let r = srv
        .send(
            Method::POST,
            "/api/v1/auth/api-keys",
            Some(&acme.key),
            Some(json!({"description": "no name"})),
        )
        .await;
    assert_error_body(&r, 400, "invalid_input");
    assert_eq!(r.body["error"]["details"]["field"], "name", "{}", r.body);
}
