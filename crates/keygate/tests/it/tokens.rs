//! Auth tokens: minted for keys and users, accepted everywhere, refused once logged out, once
//! their key is revoked or their user deleted — on every node.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::on_both_backends;

/// Waits up to `limit` for `check` to hold, polling; the feed is read twice a second.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

on_both_backends! {
    async fn a_token_works_on_every_native_route_with_the_scope_of_its_key(srv) {
        let acme = srv.account("Acme").await;
        let (reader, _) = srv.create_key(&acme.key, json!({"name": "ro", "scope": "read"})).await;
        let r = srv.send(Method::POST, "/api/v1/auth/token", Some(&reader), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let token = r.body["token"].as_str().expect("token").to_owned();
        assert!(token.starts_with("eyJhbGciOiJSUzI1NiIs"));
        assert_eq!(r.body["token_type"], "Bearer");
        assert_eq!(r.body["expires_in"], 3600);
        assert_eq!(r.body["scope"], "read");

        // As a bearer token and as X-Auth-Token.
        let me = srv.get_ok("/api/v1/auth/me", &token).await;
        assert_eq!(me["credential"], "auth_token");
        assert_eq!(me["scope"], "read");
        let via_header = srv.client.get(format!("{}/api/v1/auth/api-keys", srv.base)).header("x-auth-token", &token)
            .send().await.expect("send");
        assert_eq!(via_header.status(), 200);
        // The key's scope applies: read cannot create keys.
        let denied = srv.send(Method::POST, "/api/v1/auth/api-keys", Some(&token), Some(json!({"name": "x"}))).await;
        assert_eq!(denied.status, 403);
        // A token is not exchanged for another token.
        assert_eq!(srv.send(Method::POST, "/api/v1/auth/token", Some(&token), None).await.status, 400);
    }

    async fn a_token_of_a_revoked_key_is_refused_on_the_next_request(srv) {
        let acme = srv.account("Acme").await;
        let (k, id) = srv.create_key(&acme.key, json!({"name": "t"})).await;
        let (token, data) = srv.api_auth(&k).await;
        assert_eq!(data["account_id"], acme.id.as_str());
        let account = format!("/v2/accounts/{}", acme.id);
        assert_eq!(srv.v2(Method::GET, &account, Some(&token), None).await.status, 200);
        let r = srv.send(Method::DELETE, &format!("/api/v1/auth/api-keys/{id}"), Some(&acme.key), None).await;
        assert_eq!(r.status, 200);
        let after = srv.v2(Method::GET, &account, Some(&token), None).await;
        assert_eq!(after.status, 401);
        assert_eq!(after.body["error"], "401");
        assert_eq!(after.body["message"], "unauthorized");
    }

    async fn logging_out_a_token_refuses_it_from_then_on(srv) {
        let acme = srv.account("Acme").await;
        let (token, _) = srv.api_auth(&acme.key).await;
        let info = srv.v2(Method::GET, "/v2/token_auth", Some(&token), None).await;
        assert_eq!(info.status, 200);
        assert_eq!(info.body["data"]["account_id"], acme.id.as_str());
        assert_eq!(info.body["data"]["method"], "api_key");
        let out = srv.v2(Method::DELETE, "/v2/token_auth", Some(&token), None).await;
        assert_eq!(out.status, 200);
        assert_eq!(out.body["status"], "success");
        assert_eq!(srv.v2(Method::GET, "/v2/token_auth", Some(&token), None).await.status, 401);
        assert_eq!(srv.get("/api/v1/auth/me", &token).await.status, 401);
        // Other tokens of the same key still work.
        let (other, _) = srv.api_auth(&acme.key).await;
        assert_eq!(srv.get("/api/v1/auth/me", &other).await.status, 200);
    }

    async fn user_auth_takes_the_md5_or_sha1_of_username_and_password(srv) {
        let acme = srv.account("Acme").await;
        let users = format!("/v2/accounts/{}/users", acme.id);
        let (admin_token, _) = srv.api_auth(&acme.key).await;
        let r = srv.v2(Method::PUT, &users, Some(&admin_token), Some(json!({"data": {
            "first_name": "John", "last_name": "Doe", "email": "john@example.com", "username": "JohnDoe",
            "password": "s3cret-pass", "priv_level": "user"}}))).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let user_id = r.body["data"]["id"].as_str().expect("id").to_owned();
        let md5 = keygate_server::service::passwords::crossbar_md5("johndoe", "s3cret-pass");
        let sha1 = keygate_server::service::passwords::crossbar_sha1("johndoe", "s3cret-pass");
        for (creds, account_name) in [(md5.as_str(), "Acme"), (sha1.as_str(), "ACME"), (&md5.to_uppercase(), "acme")] {
            let r = srv.v2(Method::PUT, "/v2/user_auth", None,
                Some(json!({"data": {"credentials": creds, "account_name": account_name}}))).await;
            assert_eq!(r.status, 201, "{}", r.body);
            assert_eq!(r.body["data"]["owner_id"], user_id.as_str());
            assert_eq!(r.body["data"]["method"], "user_auth");
            let token = r.body["auth_token"].as_str().expect("token");
            let me = srv.get_ok("/api/v1/auth/me", token).await;
            assert_eq!(me["username"], "johndoe");
            assert_eq!(me["scope"], "write", "a member's token writes but does not administer");
        }
        let wrong = keygate_server::service::passwords::crossbar_md5("johndoe", "wrong-pass");
        let r = srv.v2(Method::PUT, "/v2/user_auth", None,
            Some(json!({"data": {"credentials": wrong, "account_name": "Acme"}}))).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.body["error"], "401");
        let r = srv.v2(Method::PUT, "/v2/user_auth", None,
            Some(json!({"data": {"credentials": md5, "account_name": "Globex"}}))).await;
        assert_eq!(r.status, 401, "unknown account");
        let r = srv.v2(Method::PUT, "/v2/user_auth", None, Some(json!({"data": {"credentials": "zz"}}))).await;
        assert_eq!(r.status, 400);
    }

    async fn a_token_of_a_deleted_user_is_refused(srv) {
        let acme = srv.account("Acme").await;
        let users = format!("/v2/accounts/{}/users", acme.id);
        let (admin_token, _) = srv.api_auth(&acme.key).await;
        let r = srv.v2(Method::PUT, &users, Some(&admin_token), Some(json!({"data": {
            "first_name": "Temp", "last_name": "User", "email": "temp@example.com", "password": "temporary-1"}}))).await;
        let uid = r.body["data"]["id"].as_str().expect("id").to_owned();
        let creds = keygate_server::service::passwords::crossbar_md5("temp@example.com", "temporary-1");
        let r = srv.v2(Method::PUT, "/v2/user_auth", None,
            Some(json!({"data": {"credentials": creds, "account_name": "Acme"}}))).await;
        let token = r.body["auth_token"].as_str().expect("token").to_owned();
        assert_eq!(srv.v2(Method::GET, &format!("/v2/accounts/{}", acme.id), Some(&token), None).await.status, 200);
        let del = srv.v2(Method::DELETE, &format!("{users}/{uid}"), Some(&admin_token), None).await;
        assert_eq!(del.status, 200);
        assert_eq!(srv.v2(Method::GET, &format!("/v2/accounts/{}", acme.id), Some(&token), None).await.status, 401);
    }

    async fn a_logout_or_revocation_on_one_node_is_refused_by_another_within_a_second(srv) {
        let acme = srv.account("Acme").await;
        let node_b = srv.another_node().await;
        let (token, _) = srv.api_auth(&acme.key).await;
        let (k, key_id) = srv.create_key(&acme.key, json!({"name": "shared"})).await;
        // Node B knows both (and caches them).
        assert_eq!(node_b.get("/api/v1/auth/me", &token).await.status, 200, "tokens verify on any node");
        assert_eq!(node_b.get("/api/v1/auth/me", &k).await.status, 200);

        assert_eq!(srv.v2(Method::DELETE, "/v2/token_auth", Some(&token), None).await.status, 200);
        srv.send(Method::DELETE, &format!("/api/v1/auth/api-keys/{key_id}"), Some(&acme.key), None).await;
        let started = std::time::Instant::now();
        assert!(eventually(Duration::from_secs(1), || async { node_b.get("/api/v1/auth/me", &token).await.status == 401 }).await,
            "node B still accepts the logged-out token after 1 s");
        assert!(eventually(Duration::from_secs(1), || async { node_b.get("/api/v1/auth/me", &k).await.status == 401 }).await,
            "node B still accepts the revoked key after 1 s");
        eprintln!("revocation reached node B in {:?}", started.elapsed());
        node_b.shutdown().await;
    }
}

#[tokio::test]
async fn operator_keys_are_not_exchanged_for_tokens() {
    let srv = crate::harness::TestServer::start(crate::harness::Backend::Sqlite)
        .await
        .expect("sqlite");
    let op = srv.operator_key().await;
    let r = srv
        .send(Method::POST, "/api/v1/auth/token", Some(&op), None)
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn a_forged_or_tampered_token_is_refused() {
    let srv = crate::harness::TestServer::start(crate::harness::Backend::Sqlite)
        .await
        .expect("sqlite");
    let acme = srv.account("Acme").await;
    let (token, _) = srv.api_auth(&acme.key).await;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    // Raise the scope in the payload without re-signing.
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value =
        serde_json::from_slice(&engine.decode(&parts[1]).expect("b64")).expect("json");
    claims["exp"] = json!(claims["exp"].as_i64().expect("exp") + 86_400);
    parts[1] = engine.encode(claims.to_string());
    let forged = parts.join(".");
    assert_eq!(srv.get("/api/v1/auth/me", &forged).await.status, 401);
    let none_alg = format!(
        "{}.{}.",
        engine.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    assert_eq!(srv.get("/api/v1/auth/me", &none_alg).await.status, 401);
    assert_eq!(
        srv.get("/api/v1/auth/me", "eyJhbGciOi.e30.x").await.status,
        401
    );
}

#[tokio::test]
async fn rotating_signing_keys_keeps_older_tokens_valid_and_publishes_both() {
    let srv = crate::harness::TestServer::start(crate::harness::Backend::Sqlite)
        .await
        .expect("sqlite");
    let acme = srv.account("Acme").await;
    let (old, _) = srv.api_auth(&acme.key).await;
    let jwks: serde_json::Value = srv
        .client
        .get(format!("{}/.well-known/jwks.json", srv.base))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(jwks["keys"].as_array().expect("keys").len(), 1);
    srv.state
        .tokens
        .rotate(srv.state.store.as_ref())
        .await
        .expect("rotate");
    let (new, _) = srv.api_auth(&acme.key).await;
    let kid = |t: &str| {
        use base64::Engine as _;
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t.split('.').next().expect("header"))
            .expect("b64");
        serde_json::from_slice::<serde_json::Value>(&h).expect("json")["kid"]
            .as_str()
            .expect("kid")
            .to_owned()
    };
    assert_ne!(kid(&old), kid(&new));
    let jwks: serde_json::Value = srv
        .client
        .get(format!("{}/.well-known/jwks.json", srv.base))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid"))
        .collect();
    assert!(kids.contains(&kid(&old).as_str()) && kids.contains(&kid(&new).as_str()));
    assert_eq!(srv.get("/api/v1/auth/me", &old).await.status, 200);
    assert_eq!(srv.get("/api/v1/auth/me", &new).await.status, 200);
}

#[tokio::test]
async fn eddsa_signing_is_an_option() {
    let srv = crate::harness::TestServer::start_with(crate::harness::Backend::Sqlite, |c| {
        c.token_algorithm = keygate_token::Algorithm::EdDsa;
    })
    .await
    .expect("sqlite");
    let acme = srv.account("Acme").await;
    let (token, _) = srv.api_auth(&acme.key).await;
    assert!(token.starts_with("eyJhbGciOiJFZERTQSIs"), "{token}");
    assert_eq!(srv.get("/api/v1/auth/me", &token).await.status, 200);
}
