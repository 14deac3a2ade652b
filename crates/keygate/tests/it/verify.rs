//! `POST /api/v1/keys/verify`: always 200, the verdict in `valid` and `code`.

use reqwest::Method;
use serde_json::json;

use crate::harness::{with_plan, Backend, TestServer};

async fn verify(srv: &TestServer, caller: &str, body: serde_json::Value) -> serde_json::Value {
    let r = srv
        .send(
            Method::POST,
            "/api/v1/keys/verify",
            Some(caller),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[tokio::test]
async fn an_operator_learns_whether_a_key_is_valid_whose_it_is_and_its_limits() {
    let srv = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let op = srv.operator_key().await;
    let acme = srv.account("Acme").await;
    let (k, kid) = srv
        .create_key(&acme.key, json!({"name": "svc", "scope": "write"}))
        .await;
    let v = verify(&srv, &op, json!({"key": k})).await;
    assert_eq!(v["valid"], true);
    assert_eq!(v["code"], "VALID");
    assert_eq!(v["key_id"], kid.as_str());
    assert_eq!(v["account_id"], acme.id.as_str());
    assert_eq!(v["owner_id"], acme.user_id.as_str());
    assert_eq!(v["scope"], "write");
    assert_eq!(v["ratelimit"]["limit"], 100);
    // The account's bucket: creating the key was its first request this minute.
    assert_eq!(v["ratelimit"]["remaining"], 98);
    assert!(v["ratelimit"]["reset"].as_i64().is_some());
    let v = verify(&srv, &op, json!({"key": k, "scope": "admin"})).await;
    assert_eq!(
        (v["valid"].as_bool(), v["code"].as_str()),
        (Some(false), Some("FORBIDDEN"))
    );
    let v = verify(&srv, &op, json!({"key": k, "cost": 5})).await;
    assert_eq!(v["credits"]["remaining"], 995);
    let v = verify(&srv, &op, json!({"key": k, "cost": 5000})).await;
    assert_eq!(v["code"], "INSUFFICIENT_CREDITS");
    assert_eq!(v["credits"]["remaining"], 995);
    // The key with its last character changed (to one it does not already have).
    let last = if k.ends_with('x') { 'y' } else { 'x' };
    let altered = format!("{}{last}", &k[..k.len() - 1]);
    for bad in ["ak_live_nope", "", &altered] {
        let v = verify(&srv, &op, json!({"key": bad})).await;
        assert_eq!(
            (v["valid"].as_bool(), v["code"].as_str()),
            (Some(false), Some("NOT_FOUND")),
            "{bad}"
        );
        assert!(v["account_id"].is_null());
    }
    srv.send(
        Method::DELETE,
        &format!("/api/v1/auth/api-keys/{kid}"),
        Some(&acme.key),
        None,
    )
    .await;
    assert_eq!(
        verify(&srv, &op, json!({"key": k})).await["code"],
        "REVOKED"
    );
    let soon = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(800);
    let at = soon
        .format(&time::format_description::well_known::Rfc3339)
        .expect("rfc3339");
    let (brief, _) = srv
        .create_key(&acme.key, json!({"name": "brief", "expires_at": at}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    assert_eq!(
        verify(&srv, &op, json!({"key": brief})).await["code"],
        "EXPIRED"
    );
    srv.send(
        Method::PATCH,
        &format!("/api/v1/accounts/{}", acme.id),
        Some(&op),
        Some(json!({"status": "disabled"})),
    )
    .await;
    assert_eq!(
        verify(&srv, &op, json!({"key": acme.key})).await["code"],
        "DISABLED"
    );
}

#[tokio::test]
async fn verifying_consumes_the_keys_rate_limit() {
    let srv = TestServer::start_with(Backend::Sqlite, |c| with_plan(c, "tiny", "2/minute", None))
        .await
        .expect("sqlite");
    let op = srv.operator_key().await;
    let acme = srv.account_on_plan("Acme", Some("tiny")).await;
    assert_eq!(
        verify(&srv, &op, json!({"key": acme.key})).await["code"],
        "VALID"
    );
    assert_eq!(
        verify(&srv, &op, json!({"key": acme.key, "ratelimit": false})).await["code"],
        "VALID"
    );
    assert_eq!(
        verify(&srv, &op, json!({"key": acme.key})).await["code"],
        "VALID"
    );
    let v = verify(&srv, &op, json!({"key": acme.key})).await;
    assert_eq!(
        (v["valid"].as_bool(), v["code"].as_str()),
        (Some(false), Some("RATE_LIMITED"))
    );
    assert_eq!(v["ratelimit"]["remaining"], 0);
}

#[tokio::test]
async fn only_operators_and_keys_with_the_verify_permission_verify_and_never_across_accounts() {
    let srv = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let acme = srv.account("Acme").await;
    let globex = srv.account("Globex").await;
    let r = srv
        .send(
            Method::POST,
            "/api/v1/keys/verify",
            Some(&acme.key),
            Some(json!({"key": globex.key})),
        )
        .await;
    assert_eq!(r.status, 403, "an admin key without the permission");
    let (checker, _) = srv
        .create_key(
            &acme.key,
            json!({"name": "checker", "scope": "read", "permissions": ["verify"]}),
        )
        .await;
    let (own, _) = srv.create_key(&acme.key, json!({"name": "own"})).await;
    assert_eq!(
        verify(&srv, &checker, json!({"key": own})).await["code"],
        "VALID"
    );
    let v = verify(&srv, &checker, json!({"key": globex.key})).await;
    assert_eq!(
        v["code"], "NOT_FOUND",
        "another account's key looks unknown"
    );
    assert!(v["key_id"].is_null());
    let op = srv.operator_key().await;
    let other_op = srv.operator_key().await;
    assert_eq!(
        verify(&srv, &op, json!({"key": other_op})).await["code"],
        "NOT_FOUND",
        "operator keys are not verified"
    );
    let bad = srv
        .send(
            Method::POST,
            "/api/v1/auth/api-keys",
            Some(&acme.key),
            Some(json!({"name": "x", "permissions": ["root"]})),
        )
        .await;
    assert_eq!(bad.status, 400);
}
