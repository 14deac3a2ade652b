//! The dashboard's rules over HTTP: sessions and their cookies, CSRF, login throttling, sign-up
//! modes, a key's plaintext shown once, and one account's user never reaching another's keys.
//! A real browser drives the whole flow in `tests/browser`; these check what a browser hides.

use std::collections::BTreeMap;

use keygate_server::dashboard::SignupMode;
use keygate_server::service::accounts::{self, NewAccount};
use reqwest::Method;

use crate::harness::*;
use crate::on_both_backends;

const PASSWORD: &str = "correct horse battery staple";

/// A cookie-keeping client that does not follow redirects, so each answer can be checked.
struct Browser {
    base: String,
    client: reqwest::Client,
    cookies: BTreeMap<String, String>,
    /// Every `Set-Cookie` received, whole, for checking attributes.
    set_cookies: Vec<String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Browser {
    fn new(srv: &TestServer) -> Self {
        Browser {
            base: srv.base.clone(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: BTreeMap::new(),
            set_cookies: Vec::new(),
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let req = if cookie.is_empty() {
            req
        } else {
            req.header("cookie", cookie)
        };
        let resp = req.send().await.expect("request");
        let headers = resp.headers().clone();
        for sc in headers.get_all("set-cookie") {
            let sc = sc.to_str().expect("ascii").to_owned();
            let pair = sc.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() || sc.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), v.to_owned());
                }
            }
            self.set_cookies.push(sc);
        }
        Page {
            status: resp.status().as_u16(),
            location: headers
                .get("location")
                .map(|l| l.to_str().expect("ascii").to_owned()),
            body: resp.text().await.expect("body"),
            headers,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// Posts a form with this browser's CSRF token (from its cookie) added.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.cookies.get("kg_csrf").cloned().unwrap_or_default();
        let mut form: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        let req = self.client.post(format!("{}{path}", self.base)).form(&form);
        self.send(req).await
    }

    /// Posts a form exactly as given: no CSRF token added.
    async fn post_raw(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .form(fields);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    async fn login(&mut self, email: &str, password: &str) -> Page {
        self.get("/login").await;
        self.post("/login", &[("email", email), ("password", password)])
            .await
    }
}

/// The newest mail written for `to` by the file mailer, and the link in it.
fn last_link_to(srv: &TestServer, to: &str) -> String {
    let dir = srv.data_dir.join("mail");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for f in files.iter().rev() {
        let text = std::fs::read_to_string(f).expect("mail");
        if text.contains(&format!("To: {to}\r\n")) {
            let start = text.find("http").expect("a link in the mail");
            let link = text[start..]
                .split_whitespace()
                .next()
                .expect("link")
                .to_owned();
            // Links name the configured address; the test server listens elsewhere.
            let path = link.find("/").map(|_| {
                let after_scheme = &link[link.find("://").expect("scheme") + 3..];
                &after_scheme[after_scheme.find('/').expect("path")..]
            });
            return path.expect("path").to_owned();
        }
    }
    panic!("no mail to {to} in {}", dir.display());
}

/// An account whose owner (verified, with a password) is `email`; returns its first key.
async fn account_with_owner(srv: &TestServer, name: &str, email: &str) -> String {
    let created = accounts::create_account(
        &srv.state,
        NewAccount {
            name: name.into(),
            email: email.into(),
            plan: None,
            password: Some(PASSWORD.into()),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
        },
    )
    .await
    .expect("account");
    srv.state
        .store
        .mark_email_verified(
            &created.account.id,
            &created.owner.id,
            time::OffsetDateTime::now_utc(),
        )
        .await
        .expect("verified");
    created.plaintext.into_plaintext()
}

async fn signed_in(srv: &TestServer, name: &str, email: &str) -> (Browser, String) {
    let key = account_with_owner(srv, name, email).await;
    let mut b = Browser::new(srv);
    let r = b.login(email, PASSWORD).await;
    assert_eq!(r.status, 303, "login: {}", r.body);
    (b, key)
}

/// The plaintext key on a "your new API key" page.
fn shown_key(body: &str) -> String {
    let at = body.find("id=\"new-key\"").expect("the key field");
    let value = &body[at..];
    let start = value.find("value=\"").expect("value") + 7;
    value[start..start + value[start..].find('"').expect("end")].to_owned()
}

fn key_id_in(body: &str) -> String {
    let at = body.find("/keys/key_").expect("a key link") + 6;
    body[at..at + body[at..].find('/').expect("end")].to_owned()
}

on_both_backends! {
    async fn signing_up_verifying_logging_in_and_creating_a_key_works_end_to_end(srv) {
        let mut b = Browser::new(&srv);
        let page = b.get("/signup").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("name=\"csrf\""));
        let r = b.post("/signup", &[("name", "Grace Hopper"), ("email", "grace@navy.example"),
            ("password", PASSWORD), ("organization", "Navy Labs")]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("Check your email"));

        // Not verified yet: logging in sends a new link instead of a session.
        let r = b.login("grace@navy.example", PASSWORD).await;
        assert_eq!(r.status, 403);
        assert!(!b.cookies.contains_key("kg_session"));

        let link = last_link_to(&srv, "grace@navy.example");
        assert!(link.starts_with("/verify-email?token="), "{link}");
        let r = b.get(&link).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("verified"));
        assert_eq!(b.get(&link).await.status, 404, "a link works once");

        let r = b.login("grace@navy.example", PASSWORD).await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.location.as_deref(), Some("/keys"));
        let keys = b.get("/keys").await;
        assert_eq!(keys.status, 200);
        assert!(keys.body.contains("No API keys yet"), "a sign-up makes no key of its own");

        let r = b.post("/keys", &[("name", "Development Key"), ("description", "laptop"),
            ("scope", "write"), ("environment", "test"), ("expires_on", "")]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let key = shown_key(&r.body);
        assert!(key.starts_with("ak_test_"), "{key}");
        let me = srv.get("/api/v1/auth/me", &key).await;
        assert_eq!(me.status, 200);
        assert_eq!(me.body["email"], "grace@navy.example");
        assert_eq!(me.body["scope"], "write");
    }

    async fn a_new_key_is_shown_once_and_never_again(srv) {
        let (mut b, _) = signed_in(&srv, "Acme", "ada@acme.example").await;
        let r = b.post("/keys", &[("name", "Production App"), ("scope", "read"), ("environment", "live")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
        let key = shown_key(&r.body);
        assert!(r.body.contains("will not be shown again"));

        let list = b.get("/keys").await;
        assert!(list.body.contains("Production App"));
        assert!(!list.body.contains(&key), "the list shows the key's start and last four only");
        assert!(list.body.contains(&key[..12]) && list.body.contains(&key[key.len() - 4..]));
        let id = key_id_in(&list.body);
        for path in [format!("/keys/{id}/revoke"), format!("/keys/{id}/roll"), "/usage".into()] {
            let page = b.get(&path).await;
            assert_eq!(page.status, 200, "{path}");
            assert!(!page.body.contains(&key), "{path} shows the plaintext");
        }
    }

    async fn revoking_a_key_in_the_dashboard_refuses_it_on_the_next_request(srv) {
        let (mut b, _) = signed_in(&srv, "Acme", "ada@acme.example").await;
        let r = b.post("/keys", &[("name", "Short-lived"), ("scope", "write"), ("environment", "live")]).await;
        let key = shown_key(&r.body);
        assert_eq!(srv.get("/api/v1/auth/me", &key).await.status, 200);
        let id = key_id_in(&b.get("/keys").await.body);
        let confirm = b.get(&format!("/keys/{id}/revoke")).await;
        assert!(confirm.body.contains("Revoke key"));
        let r = b.post(&format!("/keys/{id}/revoke"), &[]).await;
        assert_eq!(r.status, 303);
        assert_eq!(r.location.as_deref(), Some("/keys?notice=revoked"));
        assert_eq!(srv.get("/api/v1/auth/me", &key).await.status, 401);
        assert!(b.get("/keys").await.body.contains("status-revoked"));
    }

    async fn rolling_a_key_shows_the_new_one_once_and_keeps_the_old_one_for_the_grace_period(srv) {
        let (mut b, _) = signed_in(&srv, "Acme", "ada@acme.example").await;
        let old = shown_key(&b.post("/keys", &[("name", "Rolled"), ("scope", "write"), ("environment", "live")]).await.body);
        let id = key_id_in(&b.get("/keys").await.body);
        let r = b.post(&format!("/keys/{id}/roll"), &[("grace_seconds", "3600")]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let new = shown_key(&r.body);
        assert_ne!(new, old);
        assert_eq!(srv.get("/api/v1/auth/me", &new).await.status, 200);
        assert_eq!(srv.get("/api/v1/auth/me", &old).await.status, 200, "the grace period");
    }

    async fn a_user_cannot_see_or_revoke_another_accounts_keys(srv) {
        let (mut a, _) = signed_in(&srv, "Acme", "ada@acme.example").await;
        let (mut b, _) = signed_in(&srv, "Globex", "hank@globex.example").await;
        let theirs = shown_key(&b.post("/keys", &[("name", "Globex secret"), ("scope", "write"), ("environment", "live")]).await.body);
        let their_id = key_id_in(&b.get("/keys").await.body);

        let list = a.get("/keys").await;
        assert!(!list.body.contains("Globex secret"));
        assert!(!list.body.contains(&their_id));
        assert_eq!(a.get(&format!("/keys/{their_id}/revoke")).await.status, 404);
        assert_eq!(a.post(&format!("/keys/{their_id}/revoke"), &[]).await.status, 404);
        assert_eq!(a.post(&format!("/keys/{their_id}/roll"), &[("grace_seconds", "0")]).await.status, 404);
        assert_eq!(srv.get("/api/v1/auth/me", &theirs).await.status, 200, "still working");
    }

    async fn a_form_without_the_right_csrf_token_is_refused(srv) {
        let (mut b, _) = signed_in(&srv, "Acme", "ada@acme.example").await;
        let fields = [("name", "Forged"), ("scope", "write"), ("environment", "live")];
        let r = b.post_raw("/keys", &fields, &[]).await;
        assert_eq!(r.status, 403, "no token");
        let mut wrong = vec![("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")];
        wrong.extend_from_slice(&fields);
        assert_eq!(b.post_raw("/keys", &wrong, &[]).await.status, 403, "a wrong token");
        let csrf = b.cookies["kg_csrf"].clone();
        let mut right = vec![("csrf", csrf.as_str())];
        right.extend_from_slice(&fields);
        assert_eq!(
            b.post_raw("/keys", &right, &[("sec-fetch-site", "cross-site")]).await.status,
            403,
            "from another site"
        );
        assert!(!b.get("/keys").await.body.contains("Forged"), "nothing was created");

        // Without a session cookie, the login form refuses a missing token too.
        let mut fresh = Browser::new(&srv);
        let r = fresh.post_raw("/login", &[("email", "ada@acme.example"), ("password", PASSWORD)], &[]).await;
        assert_eq!(r.status, 403);
        assert!(!fresh.cookies.contains_key("kg_session"));
    }

    async fn pages_need_a_login_and_return_to_the_page_after_it(srv) {
        account_with_owner(&srv, "Acme", "ada@acme.example").await;
        let mut b = Browser::new(&srv);
        for path in ["/keys", "/keys/new", "/usage", "/account"] {
            let r = b.get(path).await;
            assert_eq!(r.status, 303, "{path}");
            let to = r.location.expect("location");
            assert!(to.starts_with("/login?next=%2F"), "{to}");
        }
        b.get("/login?next=%2Fusage%3Fdays%3D7").await;
        let r = b.post("/login", &[("email", "ada@acme.example"), ("password", PASSWORD), ("next", "/usage?days=7")]).await;
        assert_eq!(r.location.as_deref(), Some("/usage?days=7"));
        let r = b.post("/login", &[("email", "ada@acme.example"), ("password", PASSWORD), ("next", "https://evil.example/")]).await;
        assert_eq!(r.location.as_deref(), Some("/keys"), "never to another site");
    }

    async fn logging_out_ends_the_session_on_the_server(srv) {
        let (mut b, _) = signed_in(&srv, "Acme", "ada@acme.example").await;
        let stolen = b.cookies["kg_session"].clone();
        let r = b.post("/logout", &[]).await;
        assert_eq!(r.status, 303);
        assert!(!b.cookies.contains_key("kg_session"));
        // The old cookie, replayed, no longer opens anything.
        let mut thief = Browser::new(&srv);
        thief.cookies.insert("kg_session".into(), stolen);
        assert_eq!(thief.get("/keys").await.status, 303);
    }

    async fn logins_are_throttled_per_email_and_client_address(srv) {
        account_with_owner(&srv, "Acme", "ada@acme.example").await;
        let mut b = Browser::new(&srv);
        b.get("/login").await;
        for _ in 0..5 {
            let r = b.post("/login", &[("email", "ada@acme.example"), ("password", "wrong password")]).await;
            assert_eq!(r.status, 401);
            assert!(r.body.contains("Incorrect email or password"));
        }
        let r = b.post("/login", &[("email", "ada@acme.example"), ("password", PASSWORD)]).await;
        assert_eq!(r.status, 429, "even the right password waits");
        assert!(r.headers.contains_key("retry-after"));
        assert!(!b.cookies.contains_key("kg_session"));
        // Another address from the same client is not affected.
        let r = b.post("/login", &[("email", "someone@else.example"), ("password", "whatever1")]).await;
        assert_eq!(r.status, 401);
    }

    async fn a_forgotten_password_is_reset_by_a_mailed_link_that_ends_other_sessions(srv) {
        let (mut old_browser, _) = signed_in(&srv, "Acme", "ada@acme.example").await;
        let mut b = Browser::new(&srv);
        b.get("/forgot-password").await;
        let r = b.post("/forgot-password", &[("email", "ADA@acme.example")]).await;
        assert_eq!(r.status, 200);
        let link = last_link_to(&srv, "ada@acme.example");
        assert!(link.starts_with("/reset-password?token="), "{link}");
        let token = link.split("token=").nth(1).expect("token").to_owned();
        assert_eq!(b.get(&link).await.status, 200);
        let r = b.post("/reset-password", &[("token", &token), ("password", "a brand new secret"), ("confirm", "a brand new secret")]).await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(old_browser.get("/keys").await.status, 303, "the other session ended");
        assert_eq!(b.login("ada@acme.example", PASSWORD).await.status, 401);
        assert_eq!(b.login("ada@acme.example", "a brand new secret").await.status, 303);
        let again = b.post("/reset-password", &[("token", &token), ("password", "third password"), ("confirm", "third password")]).await;
        assert_eq!(again.status, 404, "the link works once");
    }

    async fn signing_up_with_a_known_address_says_the_same_and_creates_nothing(srv) {
        account_with_owner(&srv, "Acme", "ada@acme.example").await;
        let mut b = Browser::new(&srv);
        b.get("/signup").await;
        let r = b.post("/signup", &[("name", "Mallory"), ("email", "ada@acme.example"),
            ("password", PASSWORD), ("organization", "Mallory Inc")]).await;
        assert_eq!(r.status, 200);
        assert!(r.body.contains("Check your email"));
        assert!(srv.state.store.find_account_by_name("Mallory Inc").await.is_err());
        assert!(!last_link_to(&srv, "ada@acme.example").contains("verify-email"));
    }

    async fn admins_see_the_users_and_invite_new_ones_who_join_the_account(srv) {
        let (mut owner, _) = signed_in(&srv, "Acme", "ada@acme.example").await;
        let page = owner.get("/account").await;
        assert!(page.body.contains("ada@acme.example") && page.body.contains("Owner"));
        let r = owner.post("/account/invites", &[("email", "bob@acme.example"), ("role", "member")]).await;
        assert_eq!(r.status, 303, "{}", r.body);
        let link = last_link_to(&srv, "bob@acme.example");
        let token = link.split("token=").nth(1).expect("token").to_owned();
        let mut bob = Browser::new(&srv);
        assert_eq!(bob.get(&link).await.status, 200);
        let r = bob.post("/invite", &[("token", &token), ("name", "Bob Builder"), ("password", PASSWORD)]).await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert!(bob.get("/keys").await.body.contains("Acme"));
        // A member creates keys up to write scope, and sees no user list.
        let r = bob.post("/keys", &[("name", "Too strong"), ("scope", "admin"), ("environment", "live")]).await;
        assert_eq!(r.status, 400);
        assert!(!bob.get("/account").await.body.contains("ada@acme.example"));
        let r = bob.post("/account/invites", &[("email", "eve@acme.example"), ("role", "admin")]).await;
        assert_eq!(r.status, 403);
        assert!(owner.get("/account").await.body.contains("bob@acme.example"));
    }

    async fn admins_change_roles_and_remove_users_but_never_their_own_or_the_owners(srv) {
        let (mut owner, _) = signed_in(&srv, "Acme", "ada@acme.example").await;
        owner.post("/account/invites", &[("email", "bob@acme.example"), ("role", "member")]).await;
        let token = last_link_to(&srv, "bob@acme.example").split("token=").nth(1).expect("token").to_owned();
        let mut bob = Browser::new(&srv);
        bob.get("/login").await;
        assert_eq!(bob.post("/invite", &[("token", &token), ("name", "Bob Builder"), ("password", PASSWORD)]).await.status, 303);
        let find = |email: &'static str| {
            let store = srv.state.store.clone();
            async move { store.find_users_by_email(email, 1).await.expect("found").remove(0).id.to_string() }
        };
        let (ada_id, bob_id) = (find("ada@acme.example").await, find("bob@acme.example").await);

        // A member changes nobody's role.
        assert_eq!(bob.post(&format!("/account/users/{ada_id}/role"), &[("role", "member")]).await.status, 403);
        let r = owner.post(&format!("/account/users/{bob_id}/role"), &[("role", "admin")]).await;
        assert_eq!(r.status, 303, "{}", r.body);
        let page = bob.get("/account").await;
        assert!(page.body.contains("ada@acme.example"), "an admin now: the users are listed");
        // Not the owner's role, nor one's own.
        assert_eq!(bob.post(&format!("/account/users/{ada_id}/role"), &[("role", "member")]).await.status, 403);
        assert_eq!(bob.post(&format!("/account/users/{bob_id}/role"), &[("role", "member")]).await.status, 403);
        assert_eq!(bob.get(&format!("/account/users/{ada_id}/remove")).await.status, 403);

        // Another account's user is not found.
        let (mut other, _) = signed_in(&srv, "Globex", "hank@globex.example").await;
        assert_eq!(other.post(&format!("/account/users/{bob_id}/remove"), &[]).await.status, 404);

        let confirm = owner.get(&format!("/account/users/{bob_id}/remove")).await;
        assert!(confirm.body.contains("Remove user"));
        assert_eq!(owner.post(&format!("/account/users/{bob_id}/remove"), &[]).await.status, 303);
        assert_eq!(bob.get("/keys").await.status, 303, "a removed user is signed out");
        assert!(!owner.get("/account").await.body.contains("bob@acme.example"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_only_sign_up_refuses_new_accounts() {
    let srv = TestServer::start_with(Backend::Sqlite, |c| c.dashboard.signup = SignupMode::Invite)
        .await
        .expect("sqlite");
    let mut b = Browser::new(&srv);
    let page = b.get("/signup").await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("invitation"));
    let r = b
        .post(
            "/signup",
            &[
                ("name", "Eve"),
                ("email", "eve@example.com"),
                ("password", PASSWORD),
                ("organization", "Eve Corp"),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(srv
        .state
        .store
        .find_account_by_name("Eve Corp")
        .await
        .is_err());
    assert!(!b.get("/login").await.body.contains("href=\"/signup\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookies_are_http_only_same_site_lax_and_secure_when_configured() {
    for secure in [false, true] {
        let srv = TestServer::start_with(Backend::Sqlite, |c| c.dashboard.cookie_secure = secure)
            .await
            .expect("sqlite");
        let (b, _) = signed_in(&srv, "Acme", "ada@acme.example").await;
        let session = b
            .set_cookies
            .iter()
            .find(|c| c.starts_with("kg_session="))
            .expect("a session cookie");
        let csrf = b
            .set_cookies
            .iter()
            .find(|c| c.starts_with("kg_csrf="))
            .expect("a csrf cookie");
        for c in [session, csrf] {
            assert!(c.contains("; HttpOnly"), "{c}");
            assert!(c.contains("; SameSite=Lax"), "{c}");
            assert!(c.contains("; Path=/"), "{c}");
            assert_eq!(c.contains("; Secure"), secure, "{c}");
        }
        assert!(session.contains("; Max-Age=43200"), "{session}");
        let token = &b.cookies["kg_session"];
        assert!(token.len() >= 43, "32 random bytes");
        // Only a hash of the token is stored.
        let hash = keygate_server::dashboard::session::secret_hash(token);
        assert!(srv
            .state
            .store
            .find_session(token, time::OffsetDateTime::now_utc())
            .await
            .is_err());
        assert!(srv
            .state
            .store
            .find_session(&hash, time::OffsetDateTime::now_utc())
            .await
            .is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_assets_are_served_with_long_cache_headers_and_pages_have_no_inline_script_or_style()
{
    let srv = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let (mut b, _) = signed_in(&srv, "Acme", "ada@acme.example").await;
    for (path, kind) in [
        ("/static/app.css", "text/css"),
        ("/static/app.js", "text/javascript"),
        ("/static/icon.svg", "image/svg+xml"),
    ] {
        let r = b.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        let ct = r.headers["content-type"].to_str().expect("ascii");
        assert!(ct.starts_with(kind), "{path}: {ct}");
        assert!(r.headers["cache-control"]
            .to_str()
            .expect("ascii")
            .contains("max-age"));
    }
    let mut pages = vec![];
    for path in ["/keys", "/keys/new", "/usage", "/account"] {
        let page = b.get(path).await;
        // The pages are made for this policy: no inline script or style.
        let csp = page.headers["content-security-policy"]
            .to_str()
            .expect("ascii");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        pages.push(page.body);
    }
    let mut anon = Browser::new(&srv);
    for path in ["/login", "/signup", "/forgot-password"] {
        pages.push(anon.get(path).await.body);
    }
    for body in pages {
        assert!(!body.contains("style="), "an inline style attribute");
        assert!(!body.contains("<style"), "an inline stylesheet");
        for (i, _) in body.match_indices("<script") {
            assert!(
                body[i..].starts_with("<script src=\"/static/"),
                "an inline script"
            );
        }
        assert!(
            !body.contains(" on") || !body.contains("onclick="),
            "an inline handler"
        );
    }
    // Any method the API does not know still answers in the API's shape.
    assert_eq!(
        srv.send(Method::GET, "/nothing-here", None, None)
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_settings_come_from_flags_environment_and_the_file() {
    let dir = temp_dir("dashcfg");
    let data = dir.join("data");
    let file = dir.join("keygate.toml");
    std::fs::write(
        &file,
        "signup = \"open\"\nbrand_name = \"From the file\"\nlogin_limit = \"2/minute\"\n",
    )
    .expect("write");
    let log = dir.join("serve.log");
    // The flag wins over the file: sign-up is closed, and the brand is the file's.
    let running = crate::cli::serve(
        &[
            "--config",
            file.to_str().expect("utf8"),
            "--data-dir",
            data.to_str().expect("utf8"),
            "--signup",
            "invite",
            "--cookie-secure",
        ],
        &log,
    )
    .await;
    let r = reqwest::get(format!("{}/signup", running.base))
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(r.text().await.expect("body").contains("From the file"));
    drop(running);

    for (args, named) in [
        (vec!["--signup", "sometimes"], "signup"),
        (vec!["--public-url", "ftp://example.com"], "public_url"),
        (
            vec!["--smtp-host", "smtp.example.com", "--smtp-tls", "maybe"],
            "smtp_tls",
        ),
        (
            vec![
                "--smtp-host",
                "smtp.example.com",
                "--mail-from",
                "not an address",
            ],
            "mail_from",
        ),
    ] {
        let out = crate::cli::bin()
            .arg("serve")
            .args(["--data-dir", data.to_str().expect("utf8")])
            .args(&args)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{args:?}: {err}");
    }
    std::fs::write(&file, "login_limit = \"lots\"\n").expect("write");
    let out = crate::cli::bin()
        .args(["serve", "--config", file.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("login_limit"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_again_replaces_the_browsers_previous_session() {
    let srv = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let (mut b, _) = signed_in(&srv, "Acme", "ada@acme.example").await;
    let first = b.cookies["kg_session"].clone();
    assert_eq!(b.login("ada@acme.example", PASSWORD).await.status, 303);
    let second = b.cookies["kg_session"].clone();
    assert_ne!(first, second, "a fresh token at each login");
    let mut replay = Browser::new(&srv);
    replay.cookies.insert("kg_session".into(), first);
    assert_eq!(replay.get("/keys").await.status, 303, "the old one ended");
    assert_eq!(b.get("/keys").await.status, 200);
}

/// The `whsec_…` secret on a "copy the signing secret" page.
fn shown_secret(body: &str) -> String {
    let secret = shown_key(body);
    assert!(secret.starts_with("whsec_"), "{secret}");
    secret
}

on_both_backends! {
    async fn webhooks_are_added_tested_replayed_rotated_and_deleted_from_the_dashboard(srv) {
        let (mut b, _) = signed_in(&srv, "Hooked", "ada@hooked.test").await;
        let list = b.get("/webhooks").await;
        assert_eq!(list.status, 200);
        assert!(list.body.contains("No endpoints yet"));
        assert!(list.body.contains("href=\"/webhooks\""), "in the sidebar");

        let bad = b.post("/webhooks", &[("url", "ftp://nope"), ("events", ""), ("description", "")]).await;
        assert_eq!(bad.status, 400);
        assert!(bad.body.contains("url-error"), "the field is marked: {}", bad.body);

        let made = b.post("/webhooks", &[
            ("url", "https://hooks.example.com/keygate"),
            ("events", "post.created, key.*"),
            ("description", "production receiver"),
        ]).await;
        assert_eq!(made.status, 200, "{}", made.body);
        let secret = shown_secret(&made.body);
        assert!(made.body.contains("will not be shown again"));
        let at = made.body.find("/webhooks/ep_").expect("a link to the endpoint") + 10;
        let id = made.body[at..at + made.body[at..].find('"').expect("end")].to_owned();

        let page = b.get(&format!("/webhooks/{id}")).await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("https://hooks.example.com/keygate"));
        assert!(page.body.contains("key.*, post.created"));
        assert!(!page.body.contains(&secret), "the secret is not shown again");

        let sent = b.post(&format!("/webhooks/{id}/test"), &[]).await;
        assert_eq!(sent.status, 303);
        let page = b.get(&format!("/webhooks/{id}")).await;
        assert!(page.body.contains("webhook.test"), "the test delivery is listed");
        let at = page.body.find("/deliveries/dlv_").expect("a replay form") + 12;
        let delivery = page.body[at..at + page.body[at..].find('/').expect("end")].to_owned();
        let replayed = b.post(&format!("/webhooks/{id}/deliveries/{delivery}/replay"), &[]).await;
        assert_eq!(replayed.status, 303, "{}", replayed.body);
        assert_eq!(replayed.location.as_deref(), Some(format!("/webhooks/{id}?notice=replayed").as_str()));

        assert_eq!(b.get(&format!("/webhooks/{id}/rotate")).await.status, 200);
        let rotated = b.post(&format!("/webhooks/{id}/rotate"), &[]).await;
        assert_eq!(rotated.status, 200);
        assert_ne!(shown_secret(&rotated.body), secret);

        let off = b.post(&format!("/webhooks/{id}/disable"), &[]).await;
        assert_eq!(off.status, 303);
        assert!(b.get(&format!("/webhooks/{id}")).await.body.contains("disabled by a user"));

        // Another account's user sees nothing of it.
        let (mut other, _) = signed_in(&srv, "Others", "eve@others.test").await;
        assert_eq!(other.get(&format!("/webhooks/{id}")).await.status, 404);
        assert_eq!(other.post(&format!("/webhooks/{id}/delete"), &[]).await.status, 404);

        let no_csrf = b.post_raw(&format!("/webhooks/{id}/delete"), &[], &[]).await;
        assert_eq!(no_csrf.status, 403, "a form without its CSRF token is refused");
        let gone = b.post(&format!("/webhooks/{id}/delete"), &[]).await;
        assert_eq!(gone.status, 303);
        assert_eq!(b.get(&format!("/webhooks/{id}")).await.status, 404);
    }
}

on_both_backends! {
    async fn dashboard_logins_are_in_the_audit_log_without_the_password(srv) {
        let key = account_with_owner(&srv, "Audited", "ada@audited.test").await;
        let mut b = Browser::new(&srv);
        assert_eq!(b.login("ada@audited.test", "not the password").await.status, 401);
        assert_eq!(b.login("ada@audited.test", PASSWORD).await.status, 303);
        let log = srv.get_ok("/api/v1/audit-log?action=login.", &key).await;
        let entries = log.as_array().expect("entries");
        let actions: Vec<&str> = entries.iter().filter_map(|e| e["action"].as_str()).collect();
        assert!(actions.contains(&"login.succeeded"), "{log}");
        let text = log.to_string();
        assert!(!text.contains(PASSWORD) && !text.contains("not the password"));
        assert!(text.contains("dashboard"));
    }
}

/// The value of the read-only field `id` on a page (a client ID or secret shown once).
fn shown_field(body: &str, id: &str) -> String {
    let at = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no field {id}: {body}"));
    let value = &body[at..];
    let start = value.find("value=\"").expect("value") + 7;
    value[start..start + value[start..].find('"').expect("end")].to_owned()
}

/// A client-credentials request at `/oauth/token`, authenticated with HTTP Basic.
async fn client_credentials(srv: &TestServer, id: &str, secret: &str) -> Resp {
    let req = srv
        .client
        .post(format!("{}/oauth/token", srv.base))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")]);
    TestServer::read(req.send().await.expect("request")).await
}

on_both_backends! {
    async fn oauth_apps_are_registered_used_and_deleted_from_the_dashboard(srv) {
        let (mut b, _) = signed_in(&srv, "Integrated", "ada@integrated.test").await;
        let list = b.get("/oauth-apps").await;
        assert_eq!(list.status, 200);
        assert!(list.body.contains("No OAuth apps yet"));
        assert!(list.body.contains("href=\"/oauth-apps\""), "in the sidebar");
        assert_eq!(b.get("/oauth-apps/new").await.status, 200);

        let bad = b.post("/oauth-apps", &[
            ("name", "Reports"), ("redirect_uris", "ftp://nope"), ("scope_read", "on"), ("confidential", "yes"),
        ]).await;
        assert_eq!(bad.status, 400);
        assert!(bad.body.contains("redirect_uris-error"), "the field is marked: {}", bad.body);

        let fields = [
            ("name", "Reports"),
            ("redirect_uris", "https://reports.example.com/callback\r\nhttp://localhost:8080/cb"),
            ("scope_read", "on"),
            ("scope_write", "on"),
            ("confidential", "yes"),
        ];
        let no_csrf = b.post_raw("/oauth-apps", &fields, &[]).await;
        assert_eq!(no_csrf.status, 403, "a form without its CSRF token is refused");
        assert!(b.get("/oauth-apps").await.body.contains("No OAuth apps yet"), "nothing was made");

        let made = b.post("/oauth-apps", &fields).await;
        assert_eq!(made.status, 200, "{}", made.body);
        assert!(made.body.contains("will not be shown again"));
        assert!(made.body.contains("data-copy=\"new-key\""));
        let id = shown_field(&made.body, "client-id");
        let secret = shown_field(&made.body, "new-key");
        assert!(secret.starts_with("kgcs_"), "{secret}");

        let list = b.get("/oauth-apps").await;
        assert!(list.body.contains("Reports") && list.body.contains(&id));
        assert!(list.body.contains("https://reports.example.com/callback"));
        assert!(list.body.contains("read write"));
        assert!(!list.body.contains(&secret), "the secret is not shown again");

        let token = client_credentials(&srv, &id, &secret).await;
        assert_eq!(token.status, 200, "{}", token.body);
        assert!(token.body["access_token"].as_str().is_some_and(|t| !t.is_empty()));

        // Another account's user sees nothing of it.
        let (mut other, _) = signed_in(&srv, "Others", "eve@others.test").await;
        assert!(!other.get("/oauth-apps").await.body.contains(&id));
        assert_eq!(other.get(&format!("/oauth-apps/{id}/delete")).await.status, 404);
        assert_eq!(other.post(&format!("/oauth-apps/{id}/delete"), &[]).await.status, 404);
        assert_eq!(client_credentials(&srv, &id, &secret).await.status, 200, "still working");

        assert_eq!(b.post_raw(&format!("/oauth-apps/{id}/delete"), &[], &[]).await.status, 403);
        assert_eq!(b.get(&format!("/oauth-apps/{id}/delete")).await.status, 200);
        let gone = b.post(&format!("/oauth-apps/{id}/delete"), &[]).await;
        assert_eq!(gone.status, 303);
        assert_eq!(gone.location.as_deref(), Some("/oauth-apps?notice=deleted"));
        assert!(!b.get("/oauth-apps").await.body.contains(&id));
        let refused = client_credentials(&srv, &id, &secret).await;
        assert_eq!(refused.status, 401, "{}", refused.body);
        assert_eq!(refused.body["error"], "invalid_client");
    }

    async fn a_user_sees_the_apps_they_authorized_and_revokes_them_from_the_dashboard(srv) {
        let (mut b, _) = signed_in(&srv, "Consenting", "ada@consenting.test").await;
        let made = b.post("/oauth-apps", &[
            ("name", "Calendar sync"), ("redirect_uris", "https://cal.example.com/cb"),
            ("scope_read", "on"), ("confidential", "no"),
        ]).await;
        assert_eq!(made.status, 200, "{}", made.body);
        let id = shown_field(&made.body, "client-id");
        assert!(!made.body.contains("id=\"new-key\""), "a public app has no secret");

        let user = srv.state.store.find_users_by_email("ada@consenting.test", 1).await.expect("users")
            .pop().expect("the user");
        let at = time::OffsetDateTime::now_utc();
        srv.state.store.upsert_oauth_consent(&keygate_store::OAuthConsent {
            account_id: user.account_id.clone(),
            user_id: user.id.clone(),
            client_id: keygate_core::ClientId::parse(&id).expect("client id"),
            scope: "read".into(),
            created_at: at,
            updated_at: at,
        }).await.expect("consent");

        let page = b.get("/oauth-apps").await;
        assert!(page.body.contains("Apps you have authorized"));
        let action = format!("/oauth-apps/consents/{id}/revoke");
        assert!(page.body.contains(&action), "a revoke button: {}", page.body);

        assert_eq!(b.post_raw(&action, &[], &[]).await.status, 403, "not without CSRF");
        let revoked = b.post(&action, &[]).await;
        assert_eq!(revoked.status, 303, "{}", revoked.body);
        assert_eq!(revoked.location.as_deref(), Some("/oauth-apps?notice=revoked"));
        assert!(!b.get("/oauth-apps").await.body.contains(&action));
        assert!(srv.state.store.list_oauth_consents(&user.id).await.expect("consents").is_empty());
        assert_eq!(b.post(&action, &[]).await.status, 404, "nothing left to revoke");
    }
}
