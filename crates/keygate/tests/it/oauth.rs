//! OAuth 2.0 end to end over HTTP: clients, the three grants at /oauth/token, PKCE, replay
//! detection, introspection, revocation, metadata and consents. The authorization step is
//! driven through the service functions the dashboard's consent page calls (`validate_request`
//! and `grant`), since the login page is not part of this server yet; everything after the
//! redirect is plain HTTP, as a client would do it.

use keygate_core::oauth::s256_challenge;
use keygate_server::oauth::authorize::{self, AuthorizeError, AuthorizeParams};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{Resp, TestAccount, TestServer};
use crate::on_both_backends;

const REDIRECT: &str = "https://partner.example.com/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

struct Client {
    id: String,
    secret: Option<String>,
}

async fn register(srv: &TestServer, key: &str, body: Value) -> Client {
    let r = srv
        .send(Method::POST, "/api/v1/oauth/clients", Some(key), Some(body))
        .await;
    assert_eq!(r.status, 201, "register client: {}", r.body);
    Client {
        id: r.body["client_id"].as_str().expect("client_id").to_owned(),
        secret: r.body["client_secret"].as_str().map(str::to_owned),
    }
}

async fn confidential(srv: &TestServer, acct: &TestAccount, scope: &str) -> Client {
    register(
        srv,
        &acct.key,
        json!({"name": "Partner <App>", "redirect_uris": [REDIRECT], "scope": scope}),
    )
    .await
}

/// A form POST to an OAuth endpoint; `basic` authenticates the client with HTTP Basic.
async fn form(
    srv: &TestServer,
    path: &str,
    basic: Option<&Client>,
    fields: &[(&str, &str)],
) -> Resp {
    let mut req = srv.client.post(format!("{}{path}", srv.base)).form(fields);
    if let Some(c) = basic {
        req = req.basic_auth(&c.id, c.secret.as_deref());
    }
    TestServer::read(req.send().await.expect("request")).await
}

async fn client_token(srv: &TestServer, c: &Client, scope: Option<&str>) -> String {
    let mut fields = vec![("grant_type", "client_credentials")];
    if let Some(s) = scope {
        fields.push(("scope", s));
    }
    let r = form(srv, "/oauth/token", Some(c), &fields).await;
    assert_eq!(r.status, 200, "client credentials: {}", r.body);
    r.body["access_token"].as_str().expect("token").to_owned()
}

fn params(client: &Client, extra: &[(&str, &str)]) -> AuthorizeParams {
    let mut p = AuthorizeParams {
        response_type: Some("code".into()),
        client_id: Some(client.id.clone()),
        redirect_uri: Some(REDIRECT.into()),
        state: Some("xyz-state".into()),
        code_challenge: Some(s256_challenge(VERIFIER)),
        code_challenge_method: Some("S256".into()),
        ..Default::default()
    };
    for (k, v) in extra {
        let v = Some(v.to_string()).filter(|v| !v.is_empty());
        match *k {
            "scope" => p.scope = v,
            "code_challenge" => p.code_challenge = v,
            "code_challenge_method" => p.code_challenge_method = v,
            "response_type" => p.response_type = v,
            "redirect_uri" => p.redirect_uri = v,
            other => panic!("no parameter {other}"),
        }
    }
    p
}

/// What the consent page does when the account's owner clicks "Allow": the code, from the
/// redirect URL, after checking that the state came back.
async fn approve(srv: &TestServer, acct: &TestAccount, p: AuthorizeParams) -> String {
    let request = authorize::validate_request(&srv.state, &p)
        .await
        .expect("a valid authorization request");
    let user = owner(srv, acct).await;
    let url = authorize::grant(&srv.state, &user, &request)
        .await
        .expect("granted");
    let url = reqwest::Url::parse(&url).expect("redirect URL");
    assert!(url.as_str().starts_with(REDIRECT));
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q.get("state").map(String::as_str), Some("xyz-state"));
    q.get("code").expect("code").clone()
}

async fn owner(srv: &TestServer, acct: &TestAccount) -> keygate_store::User {
    let account = keygate_core::AccountId::parse(&acct.id).expect("account id");
    let user = keygate_core::UserId::parse(&acct.user_id).expect("user id");
    srv.state
        .store
        .get_user(&account, &user)
        .await
        .expect("owner")
}

async fn exchange(srv: &TestServer, c: &Client, code: &str, verifier: &str) -> Resp {
    let mut fields = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ];
    let basic = match &c.secret {
        Some(_) => Some(c),
        None => {
            fields.push(("client_id", c.id.as_str()));
            None
        }
    };
    form(srv, "/oauth/token", basic, &fields).await
}

async fn refresh(srv: &TestServer, c: &Client, token: &str) -> Resp {
    let mut fields = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
    let basic = match &c.secret {
        Some(_) => Some(c),
        None => {
            fields.push(("client_id", c.id.as_str()));
            None
        }
    };
    form(srv, "/oauth/token", basic, &fields).await
}

async fn introspect(srv: &TestServer, c: &Client, token: &str) -> Value {
    let r = form(srv, "/oauth/introspect", Some(c), &[("token", token)]).await;
    assert_eq!(r.status, 200, "introspect: {}", r.body);
    r.body
}

/// The audit entries of `action` that `key`'s account sees.
async fn audited(srv: &TestServer, key: &str, action: &str) -> Vec<Value> {
    let body = srv
        .get_ok(&format!("/api/v1/audit-log?action={action}&limit=100"), key)
        .await;
    body.as_array().cloned().unwrap_or_default()
}

fn oauth_error(r: &Resp) -> &str {
    r.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not an OAuth error body: {}", r.body))
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

on_both_backends! {
    async fn clients_are_registered_listed_changed_and_deleted_by_their_accounts_admins(srv) {
        let acct = srv.account("OAuth Clients").await;
        let other = srv.account("Someone Else").await;
        let r = srv.send(Method::POST, "/api/v1/oauth/clients", Some(&acct.key), Some(json!({
            "name": "Partner", "redirect_uris": [REDIRECT, "http://127.0.0.1:8765/cb"],
            "scope": "read write", "confidential": true
        }))).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = str_of(&r.body, "client_id").to_owned();
        assert!(id.starts_with("kgc_"));
        assert!(str_of(&r.body, "client_secret").starts_with("kgcs_"));
        assert_eq!(r.body["scope"], "read write");

        for (uris, why) in [
            (json!(["http://partner.example.com/cb"]), "plain http off loopback"),
            (json!(["https://partner.example.com/cb#x"]), "a fragment"),
            (json!(["partner://cb"]), "a custom scheme"),
        ] {
            let r = srv.send(Method::POST, "/api/v1/oauth/clients", Some(&acct.key),
                Some(json!({"name": "Bad", "redirect_uris": uris}))).await;
            assert_eq!(r.status, 400, "{why}: {}", r.body);
            assert_eq!(r.body["error"]["details"]["field"], "redirect_uris");
        }
        let r = srv.send(Method::POST, "/api/v1/oauth/clients", Some(&acct.key),
            Some(json!({"name": "Bad", "scope": "read openid"}))).await;
        assert_eq!(r.status, 400, "{}", r.body);

        let (read_key, _) = srv.create_key(&acct.key, json!({"name": "ro", "scope": "read"})).await;
        let r = srv.send(Method::POST, "/api/v1/oauth/clients", Some(&read_key),
            Some(json!({"name": "Nope"}))).await;
        assert_eq!(r.status, 403);

        let public = register(&srv, &acct.key, json!({"name": "SPA", "redirect_uris": [REDIRECT], "confidential": false})).await;
        assert!(public.secret.is_none(), "a public client has no secret");

        let r = srv.get("/api/v1/oauth/clients?limit=1", &read_key).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-total-count"), Some("2"));
        assert_eq!(r.body[0]["client_id"], id.as_str());
        assert!(r.body[0].get("client_secret").is_none(), "secrets are shown once");
        assert_eq!(srv.get(&format!("/api/v1/oauth/clients/{id}"), &other.key).await.status, 404);

        let r = srv.send(Method::PATCH, &format!("/api/v1/oauth/clients/{id}"), Some(&acct.key),
            Some(json!({"name": "Partner v2", "scope": "read"}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["name"], "Partner v2");
        assert_eq!(r.body["scope"], "read");

        let r = srv.send(Method::POST, &format!("/api/v1/oauth/clients/{id}/rotate-secret"), Some(&acct.key), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let rotated = Client { id: id.clone(), secret: Some(str_of(&r.body, "client_secret").to_owned()) };
        let token = client_token(&srv, &rotated, None).await;
        assert_eq!(srv.get("/api/v1/auth/me", &token).await.status, 200);

        assert_eq!(srv.send(Method::DELETE, &format!("/api/v1/oauth/clients/{id}"), Some(&other.key), None).await.status, 404);
        assert_eq!(srv.send(Method::DELETE, &format!("/api/v1/oauth/clients/{id}"), Some(&acct.key), None).await.status, 204);
        assert_eq!(srv.get(&format!("/api/v1/oauth/clients/{id}"), &acct.key).await.status, 404);
        assert_eq!(srv.get("/api/v1/auth/me", &token).await.status, 401, "a deleted client's tokens stop working");

        for action in ["oauth.client.created", "oauth.client.updated", "oauth.client.secret_rotated", "oauth.client.deleted"] {
            let entries = audited(&srv, &acct.key, action).await;
            assert!(entries.iter().any(|e| e["object"]["id"] == id.as_str()), "{action} audited: {entries:?}");
        }
        let created = &audited(&srv, &acct.key, "oauth.client.created").await[0];
        assert!(!created.to_string().contains("kgcs_"), "no secret in the audit log");
    }

    async fn client_credentials_work_with_basic_and_with_form_authentication(srv) {
        let acct = srv.account("Machine").await;
        let c = confidential(&srv, &acct, "read write").await;

        let r = form(&srv, "/oauth/token", Some(&c), &[("grant_type", "client_credentials")]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.body["token_type"], "Bearer");
        assert_eq!(r.body["scope"], "read write");
        assert_eq!(r.body["expires_in"], 3600);
        assert!(r.body.get("refresh_token").is_none(), "no refresh token for client credentials");
        let token = str_of(&r.body, "access_token").to_owned();
        let header = token.split('.').next().expect("header");
        let header: Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).expect("b64"),
        ).expect("json");
        assert_eq!(header["typ"], "at+jwt");

        let me = srv.get_ok("/api/v1/auth/me", &token).await;
        assert_eq!(me["credential"], "oauth_access_token");
        assert_eq!(me["scope"], "write");
        assert_eq!(me["account"]["id"], acct.id.as_str());
        assert!(me["id"].is_null(), "a client credentials token is no user");

        let secret = c.secret.clone().expect("secret");
        let r = form(&srv, "/oauth/token", None, &[
            ("grant_type", "client_credentials"), ("client_id", &c.id),
            ("client_secret", &secret), ("scope", "read"),
        ]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["scope"], "read");
        let read_token = str_of(&r.body, "access_token").to_owned();
        let r = srv.send(Method::POST, "/api/v1/auth/api-keys", Some(&read_token),
            Some(json!({"name": "x", "scope": "read"}))).await;
        assert_eq!(r.status, 403, "a read token cannot write: {}", r.body);
        assert_eq!(srv.get("/api/v1/auth/api-keys", &read_token).await.status, 200);

        let wrong = Client { id: c.id.clone(), secret: Some("kgcs_wrong".into()) };
        let r = form(&srv, "/oauth/token", Some(&wrong), &[("grant_type", "client_credentials")]).await;
        assert_eq!(r.status, 401);
        assert_eq!(oauth_error(&r), "invalid_client");
        assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Basic")));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let r = form(&srv, "/oauth/token", None, &[
            ("grant_type", "client_credentials"), ("client_id", &c.id), ("client_secret", "kgcs_wrong"),
        ]).await;
        assert_eq!((r.status, oauth_error(&r)), (401, "invalid_client"));
        let r = form(&srv, "/oauth/token", None, &[
            ("grant_type", "client_credentials"), ("client_id", "kgc_00000000000000000000000000000000"), ("client_secret", "x"),
        ]).await;
        assert_eq!((r.status, oauth_error(&r)), (401, "invalid_client"));

        let r = form(&srv, "/oauth/token", Some(&c), &[("grant_type", "client_credentials"), ("scope", "admin")]).await;
        assert_eq!((r.status, oauth_error(&r)), (400, "invalid_scope"));
        let r = form(&srv, "/oauth/token", Some(&c), &[("grant_type", "client_credentials"), ("client_secret", &secret)]).await;
        assert_eq!((r.status, oauth_error(&r)), (400, "invalid_request"), "two authentication methods");

        let public = register(&srv, &acct.key, json!({"name": "SPA", "redirect_uris": [REDIRECT], "confidential": false})).await;
        let r = form(&srv, "/oauth/token", None, &[("grant_type", "client_credentials"), ("client_id", &public.id)]).await;
        assert_eq!((r.status, oauth_error(&r)), (400, "unauthorized_client"));
    }

    async fn the_password_and_implicit_grants_and_malformed_requests_are_refused(srv) {
        let acct = srv.account("Legacy").await;
        let c = confidential(&srv, &acct, "read").await;
        for grant in ["password", "implicit", "urn:ietf:params:oauth:grant-type:device_code"] {
            let r = form(&srv, "/oauth/token", Some(&c), &[
                ("grant_type", grant), ("username", "owner"), ("password", "pw"),
            ]).await;
            assert_eq!((r.status, oauth_error(&r)), (400, "unsupported_grant_type"), "{grant}");
        }
        let r = form(&srv, "/oauth/token", Some(&c), &[]).await;
        assert_eq!((r.status, oauth_error(&r)), (400, "invalid_request"));
        let r = srv.send(Method::POST, "/oauth/token", None, Some(json!({"grant_type": "client_credentials"}))).await;
        assert_eq!((r.status, oauth_error(&r)), (400, "invalid_request"), "JSON is not a form");
        let r = srv.client.post(format!("{}/oauth/token", srv.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&grant_type=client_credentials")
            .basic_auth(&c.id, c.secret.as_deref())
            .send().await.expect("request");
        let r = TestServer::read(r).await;
        assert_eq!((r.status, oauth_error(&r)), (400, "invalid_request"), "a repeated parameter");

        // The implicit grant, over HTTP: back to the client with unsupported_response_type.
        let no_redirect = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let url = format!(
            "{}/oauth/authorize?response_type=token&client_id={}&redirect_uri={}&state=s1",
            srv.base, c.id, REDIRECT
        );
        let r = no_redirect.get(&url).send().await.expect("authorize");
        assert_eq!(r.status(), 303);
        let location = r.headers()["location"].to_str().expect("location").to_owned();
        assert!(location.starts_with(&format!("{REDIRECT}?error=unsupported_response_type")), "{location}");
        assert!(location.ends_with("&state=s1"), "{location}");

        // A valid request with no one logged in goes to the dashboard's login page.
        let url = format!(
            "{}/oauth/authorize?response_type=code&client_id={}&redirect_uri={}&state=s2",
            srv.base, c.id, REDIRECT
        );
        let r = no_redirect.get(&url).send().await.expect("authorize");
        assert_eq!(r.status(), 303);
        let location = r.headers()["location"].to_str().expect("location");
        assert!(location.starts_with("/login?next=%2Foauth%2Fauthorize%3F"), "{location}");

        // A bad client or redirect URI is shown, never redirected to.
        for url in [
            format!("{}/oauth/authorize?response_type=code&client_id=kgc_00000000000000000000000000000000&redirect_uri={REDIRECT}", srv.base),
            format!("{}/oauth/authorize?response_type=code&client_id={}&redirect_uri=https://evil.example.com/cb", srv.base, c.id),
            format!("{}/oauth/authorize?response_type=code&client_id={}", srv.base, c.id),
        ] {
            let r = no_redirect.get(&url).send().await.expect("authorize");
            assert_eq!(r.status(), 400, "{url}");
            assert!(r.headers().get("location").is_none());
            assert!(r.headers()["content-security-policy"].to_str().expect("csp").contains("default-src 'self'"));
        }

        // PKCE: plain is refused, and public clients must use it.
        let err = authorize::validate_request(&srv.state, &params(&c, &[("code_challenge_method", "plain")]))
            .await.expect_err("plain");
        let url = err.redirect_url().expect("redirected");
        assert!(url.contains("error=invalid_request") && url.contains("state=xyz-state"), "{url}");
        let public = register(&srv, &acct.key, json!({"name": "SPA", "redirect_uris": [REDIRECT], "confidential": false})).await;
        let err = authorize::validate_request(&srv.state, &params(&public, &[("code_challenge", ""), ("code_challenge_method", "")]))
            .await.expect_err("no PKCE");
        assert!(matches!(err, AuthorizeError::Redirect { error: "invalid_request", .. }), "{err:?}");
        let err = authorize::validate_request(&srv.state, &params(&c, &[("scope", "admin")]))
            .await.expect_err("scope above the client's");
        assert!(matches!(err, AuthorizeError::Redirect { error: "invalid_scope", .. }), "{err:?}");
    }

    async fn a_code_with_pkce_is_exchanged_once_and_a_replay_revokes_what_it_issued(srv) {
        let acct = srv.account("Code Flow").await;
        let c = confidential(&srv, &acct, "read write").await;
        let code = approve(&srv, &acct, params(&c, &[("scope", "read")])).await;
        assert!(code.starts_with("kgac_"));

        let r = exchange(&srv, &c, &code, "wrong-verifier-wrong-verifier-wrong-verifier-0").await;
        assert_eq!((r.status, oauth_error(&r)), (400, "invalid_grant"), "wrong verifier");
        let r = form(&srv, "/oauth/token", Some(&c), &[
            ("grant_type", "authorization_code"), ("code", &code),
            ("redirect_uri", "http://127.0.0.1/other"), ("code_verifier", VERIFIER),
        ]).await;
        assert_eq!((r.status, oauth_error(&r)), (400, "invalid_grant"), "another redirect URI");
        let other = confidential(&srv, &acct, "read").await;
        let r = exchange(&srv, &other, &code, VERIFIER).await;
        assert_eq!((r.status, oauth_error(&r)), (400, "invalid_grant"), "another client");

        let r = exchange(&srv, &c, &code, VERIFIER).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.body["scope"], "read");
        let access = str_of(&r.body, "access_token").to_owned();
        let refresh_token = str_of(&r.body, "refresh_token").to_owned();
        assert!(refresh_token.starts_with("kgrt_"));

        let me = srv.get_ok("/api/v1/auth/me", &access).await;
        assert_eq!(me["id"], acct.user_id.as_str());
        assert_eq!(me["scope"], "read", "the granted scope, below the owner's admin");
        let r = srv.send(Method::POST, "/api/v1/auth/api-keys", Some(&access),
            Some(json!({"name": "x", "scope": "read"}))).await;
        assert_eq!(r.status, 403, "a read token cannot write");

        let info = introspect(&srv, &c, &access).await;
        assert_eq!(info["active"], true);
        assert_eq!(info["sub"], acct.user_id.as_str());
        assert_eq!(info["client_id"], c.id.as_str());
        assert_eq!(info["scope"], "read");

        let r = exchange(&srv, &c, &code, VERIFIER).await;
        assert_eq!((r.status, oauth_error(&r)), (400, "invalid_grant"), "a replayed code");
        assert_eq!(introspect(&srv, &c, &access).await, json!({"active": false}));
        assert_eq!(srv.get("/api/v1/auth/me", &access).await.status, 401);
        let r = refresh(&srv, &c, &refresh_token).await;
        assert_eq!((r.status, oauth_error(&r)), (400, "invalid_grant"), "its refresh token is revoked too");
        let revoked = audited(&srv, &acct.key, "oauth.grant.revoked").await;
        assert_eq!(revoked.len(), 1, "{revoked:?}");
        assert_eq!(revoked[0]["details"]["reason"], "code replayed");
        let granted = audited(&srv, &acct.key, "oauth.consent.granted").await;
        assert_eq!(granted[0]["object"]["id"], c.id.as_str());
    }

    async fn refresh_tokens_rotate_and_reusing_an_old_one_revokes_the_family(srv) {
        let acct = srv.account("Refresh").await;
        let public = register(&srv, &acct.key, json!({"name": "SPA", "redirect_uris": [REDIRECT], "confidential": false, "scope": "read write"})).await;
        let code = approve(&srv, &acct, params(&public, &[])).await;
        let r = exchange(&srv, &public, &code, VERIFIER).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["scope"], "read write");
        let rt1 = str_of(&r.body, "refresh_token").to_owned();

        let r = refresh(&srv, &public, &rt1).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let rt2 = str_of(&r.body, "refresh_token").to_owned();
        let at2 = str_of(&r.body, "access_token").to_owned();
        assert_ne!(rt1, rt2, "rotated");
        assert_eq!(srv.get_ok("/api/v1/auth/me", &at2).await["scope"], "write");

        // Narrowing on refresh, not widening.
        let r = form(&srv, "/oauth/token", None, &[
            ("grant_type", "refresh_token"), ("refresh_token", &rt2), ("client_id", &public.id), ("scope", "admin"),
        ]).await;
        assert_eq!((r.status, oauth_error(&r)), (400, "invalid_scope"));

        let r = refresh(&srv, &public, &rt1).await;
        assert_eq!((r.status, oauth_error(&r)), (400, "invalid_grant"), "the old token is reused");
        let r = refresh(&srv, &public, &rt2).await;
        assert_eq!((r.status, oauth_error(&r)), (400, "invalid_grant"), "the whole family is revoked");
        assert_eq!(srv.get("/api/v1/auth/me", &at2).await.status, 401, "and its access tokens");
    }

    async fn introspection_and_revocation_follow_a_tokens_life(srv) {
        let acct = srv.account("Introspect").await;
        let c = confidential(&srv, &acct, "read write").await;
        let token = client_token(&srv, &c, None).await;
        let info = introspect(&srv, &c, &token).await;
        assert_eq!(info["active"], true, "{info}");
        for field in ["scope", "client_id", "sub", "exp", "iat", "token_type", "iss", "jti"] {
            assert!(!info[field].is_null(), "{field} in {info}");
        }
        assert_eq!(info["sub"], c.id.as_str(), "client credentials: the client is the subject");
        assert_eq!(info["token_type"], "Bearer");

        let stranger = srv.account("Stranger").await;
        let theirs = confidential(&srv, &stranger, "read").await;
        assert_eq!(introspect(&srv, &theirs, &token).await, json!({"active": false}), "another account's client learns nothing");
        let r = form(&srv, "/oauth/revoke", Some(&theirs), &[("token", &token)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(introspect(&srv, &c, &token).await["active"], true, "only the token's own client revokes it");

        let r = form(&srv, "/oauth/revoke", Some(&c), &[("token", &token), ("token_type_hint", "access_token")]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(introspect(&srv, &c, &token).await, json!({"active": false}));
        assert_eq!(srv.get("/api/v1/auth/me", &token).await.status, 401);

        let r = form(&srv, "/oauth/revoke", Some(&c), &[("token", "kgrt_unknown")]).await;
        assert_eq!(r.status, 200, "unknown tokens are not an error");
        assert_eq!(introspect(&srv, &c, "nonsense").await, json!({"active": false}));
        let wrong = Client { id: c.id.clone(), secret: Some("kgcs_wrong".into()) };
        let r = form(&srv, "/oauth/introspect", Some(&wrong), &[("token", "x")]).await;
        assert_eq!((r.status, oauth_error(&r)), (401, "invalid_client"));

        // A refresh token: introspected, then revoked with its grant.
        let code = approve(&srv, &acct, params(&c, &[])).await;
        let r = exchange(&srv, &c, &code, VERIFIER).await;
        let rt = str_of(&r.body, "refresh_token").to_owned();
        let at = str_of(&r.body, "access_token").to_owned();
        let info = introspect(&srv, &c, &rt).await;
        assert_eq!((info["active"].clone(), info["sub"].clone()), (json!(true), json!(acct.user_id)));
        let r = form(&srv, "/oauth/revoke", Some(&c), &[("token", &rt)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(introspect(&srv, &c, &rt).await, json!({"active": false}));
        assert_eq!(srv.get("/api/v1/auth/me", &at).await.status, 401, "the grant's access token goes too");
    }

    async fn consents_are_listed_and_taking_one_back_ends_its_tokens(srv) {
        let acct = srv.account("Consent").await;
        let c = confidential(&srv, &acct, "read write").await;
        let code = approve(&srv, &acct, params(&c, &[("scope", "write")])).await;
        let r = exchange(&srv, &c, &code, VERIFIER).await;
        let rt = str_of(&r.body, "refresh_token").to_owned();
        let at = str_of(&r.body, "access_token").to_owned();

        let consents = srv.get_ok("/api/v1/oauth/consents", &acct.key).await;
        assert_eq!(consents.as_array().map(Vec::len), Some(1), "{consents}");
        assert_eq!(consents[0]["client_id"], c.id.as_str());
        assert_eq!(consents[0]["client_name"], "Partner <App>");
        assert_eq!(consents[0]["scope"], "write");

        let machine = client_token(&srv, &c, None).await;
        assert_eq!(srv.get("/api/v1/oauth/consents", &machine).await.status, 403, "a client is no user");

        let path = format!("/api/v1/oauth/consents/{}", c.id);
        assert_eq!(srv.send(Method::DELETE, &path, Some(&acct.key), None).await.status, 204);
        assert_eq!(srv.send(Method::DELETE, &path, Some(&acct.key), None).await.status, 404);
        assert_eq!(srv.get_ok("/api/v1/oauth/consents", &acct.key).await, json!([]));
        assert_eq!(srv.get("/api/v1/auth/me", &at).await.status, 401);
        let r = refresh(&srv, &c, &rt).await;
        assert_eq!((r.status, oauth_error(&r)), (400, "invalid_grant"));
    }

    async fn the_metadata_document_describes_the_server(srv) {
        let r = srv.client.get(format!("{}/.well-known/oauth-authorization-server", srv.base))
            .send().await.expect("metadata");
        let r = TestServer::read(r).await;
        assert_eq!(r.status, 200);
        let m = r.body;
        assert_eq!(m["token_endpoint"], format!("{}/oauth/token", srv.base));
        assert_eq!(m["authorization_endpoint"], format!("{}/oauth/authorize", srv.base));
        assert_eq!(m["introspection_endpoint"], format!("{}/oauth/introspect", srv.base));
        assert_eq!(m["revocation_endpoint"], format!("{}/oauth/revoke", srv.base));
        assert_eq!(m["jwks_uri"], format!("{}/.well-known/jwks.json", srv.base));
        assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(m["response_types_supported"], json!(["code"]));
        assert_eq!(m["grant_types_supported"], json!(["authorization_code", "refresh_token", "client_credentials"]));
        assert_eq!(m["scopes_supported"], json!(["read", "write", "admin"]));
        assert!(m["token_endpoint_auth_methods_supported"].as_array().expect("methods")
            .contains(&json!("client_secret_basic")));
        assert_eq!(m["issuer"], srv.state.tokens.oauth_issuer());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_issuer_is_in_the_metadata_and_the_tokens() {
    let srv = TestServer::start_with(crate::harness::Backend::Sqlite, |c| {
        c.oauth_issuer = Some("https://auth.example.com".into());
    })
    .await
    .expect("sqlite always runs");
    let acct = srv.account("Issuer").await;
    let c = confidential(&srv, &acct, "read").await;
    let token = client_token(&srv, &c, None).await;
    assert_eq!(srv.get("/api/v1/auth/me", &token).await.status, 200);
    let info = introspect(&srv, &c, &token).await;
    assert_eq!(info["iss"], "https://auth.example.com");
    let m = srv
        .client
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            srv.base
        ))
        .send()
        .await
        .expect("metadata");
    let m = TestServer::read(m).await.body;
    assert_eq!(m["issuer"], "https://auth.example.com");
    assert_eq!(m["token_endpoint"], "https://auth.example.com/oauth/token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_code_is_refused() {
    let srv = TestServer::start_with(crate::harness::Backend::Sqlite, |c| {
        c.oauth_code_ttl = std::time::Duration::ZERO;
    })
    .await
    .expect("sqlite always runs");
    let acct = srv.account("Slow Client").await;
    let c = confidential(&srv, &acct, "read").await;
    let code = approve(&srv, &acct, params(&c, &[])).await;
    let r = exchange(&srv, &c, &code, VERIFIER).await;
    assert_eq!((r.status, oauth_error(&r)), (400, "invalid_grant"));
    assert!(
        str_of(&r.body, "error_description").contains("expired"),
        "{}",
        r.body
    );
}
