//! Webhooks end to end: endpoints over the API, events published by the host service and by
//! Keygate itself, delivered to a real HTTP receiver on 127.0.0.1 and checked with an HMAC of
//! our own (aws-lc-rs, not the `hmac` crate that signs), retries, 410, replays, safety rules.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::harness::{Backend, TestAccount, TestServer};

/// What the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            body: format!("answer {status}"),
        }
    }
}

/// A webhook receiver on 127.0.0.1: records every request and answers from a script (then 200).
pub struct Receiver {
    pub base: String,
    script: Arc<Mutex<VecDeque<Reply>>>,
    /// The answer once the script is used up.
    default: Arc<Mutex<Reply>>,
    got: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    pub async fn start() -> Self {
        let (tx, got) = mpsc::unbounded_channel();
        let script: Arc<Mutex<VecDeque<Reply>>> = Arc::default();
        let default = Arc::new(Mutex::new(Reply::status(200)));
        let answers = script.clone();
        let fallback = default.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: String| {
                let tx = tx.clone();
                let answers = answers.clone();
                let fallback = fallback.clone();
                async move {
                    let _ = tx.send(Received {
                        path: uri.path().to_owned(),
                        headers,
                        body,
                    });
                    let reply = answers
                        .lock()
                        .expect("script")
                        .pop_front()
                        .unwrap_or_else(|| fallback.lock().expect("default").clone());
                    tokio::time::sleep(reply.delay).await;
                    let mut response = axum::http::Response::builder()
                        .status(StatusCode::from_u16(reply.status).expect("status"));
                    for (name, value) in reply.headers {
                        response = response.header(name, value);
                    }
                    response
                        .body(axum::body::Body::from(reply.body))
                        .expect("response")
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            base,
            script,
            default,
            got,
        }
    }

    /// How the receiver answers once its script is used up (200 at first).
    pub fn by_default(&self, reply: Reply) {
        *self.default.lock().expect("default") = reply;
    }

    pub fn reply_with(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().expect("script").extend(replies);
    }

    pub async fn next(&mut self, within: Duration) -> Received {
        tokio::time::timeout(within, self.got.recv())
            .await
            .unwrap_or_else(|_| panic!("no webhook arrived within {within:?}"))
            .expect("receiver running")
    }

    pub async fn nothing_within(&mut self, wait: Duration) {
        if let Ok(Some(r)) = tokio::time::timeout(wait, self.got.recv()).await {
            panic!("an unexpected webhook arrived: {} {}", r.path, r.body);
        }
    }
}

/// The signatures in `webhook-signature` that `secret` (`whsec_…`) made, computed here with
/// aws-lc-rs from the Standard Webhooks rules: HMAC-SHA256 of `id.timestamp.body`, base64.
pub fn signed_by(secret: &str, r: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let content = format!(
        "{}.{}.{}",
        r.header("webhook-id"),
        r.header("webhook-timestamp"),
        r.body
    );
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key),
        content.as_bytes(),
    );
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    );
    r.header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

/// A server that may deliver to 127.0.0.1 and looks for due deliveries often.
pub async fn start(backend: Backend) -> Option<TestServer> {
    TestServer::start_with(backend, |c| {
        c.webhooks_allow_private = true;
        c.webhook_poll_interval = Duration::from_millis(100);
        c.webhook_timeout = Duration::from_secs(2);
        c.webhook_lease = Duration::from_secs(5);
    })
    .await
}

macro_rules! webhook_tests {
    ($(async fn $name:ident($srv:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn body($srv: TestServer) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    body(start(Backend::Sqlite).await.expect("sqlite always runs")).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    match start(Backend::Postgres).await {
                        Some(srv) => body(srv).await,
                        None => eprintln!("SKIPPED: {} on PostgreSQL", stringify!($name)),
                    }
                }
            }
        )*
    };
}

const WAIT: Duration = Duration::from_secs(10);

pub async fn endpoint(
    srv: &TestServer,
    acct: &TestAccount,
    url: &str,
    events: Value,
) -> (String, String) {
    let r = srv
        .send(
            Method::POST,
            "/api/v1/webhooks",
            Some(&acct.key),
            Some(json!({"url": url, "events": events, "description": "test receiver"})),
        )
        .await;
    assert_eq!(r.status, 201, "create endpoint: {}", r.body);
    (
        r.body["id"].as_str().expect("id").to_owned(),
        r.body["secret"].as_str().expect("secret").to_owned(),
    )
}

pub async fn publish(srv: &TestServer, key: &str, event_type: &str, data: Value) -> Value {
    let r = srv
        .send(
            Method::POST,
            "/api/v1/events",
            Some(key),
            Some(json!({"type": event_type, "data": data})),
        )
        .await;
    assert_eq!(r.status, 202, "publish: {}", r.body);
    r.body
}

async fn deliveries(srv: &TestServer, key: &str, endpoint: &str) -> Vec<Value> {
    srv.get_ok(&format!("/api/v1/webhooks/{endpoint}/deliveries"), key)
        .await
        .as_array()
        .expect("a list")
        .clone()
}

/// Polls the deliveries log until `done` holds for the newest delivery.
async fn wait_for_delivery(
    srv: &TestServer,
    key: &str,
    endpoint: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = std::time::Instant::now();
    loop {
        let list = deliveries(srv, key, endpoint).await;
        if let Some(d) = list.first().filter(|d| done(d)) {
            return d.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the delivery never got there: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

webhook_tests! {
    async fn an_endpoint_is_created_with_its_secret_shown_once_and_managed_after(srv) {
        let acct = srv.account("Hooks").await;
        let other = srv.account("Others").await;
        let r = srv.send(Method::POST, "/api/v1/webhooks", Some(&acct.key), Some(json!({
            "url": "https://hooks.example.com/keygate",
            "events": ["post.created", "key.*"],
            "description": "production receiver",
        }))).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let secret = r.body["secret"].as_str().expect("secret");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
            .expect("base64");
        assert!(raw.len() >= 24, "at least 24 random bytes");
        assert_eq!(r.body["enabled"], true);
        assert_eq!(r.body["events"], json!(["key.*", "post.created"]));
        let id = r.body["id"].as_str().expect("id").to_owned();
        assert!(id.starts_with("ep_"));

        let got = srv.get_ok(&format!("/api/v1/webhooks/{id}"), &acct.key).await;
        assert!(got.get("secret").is_none(), "the secret is not shown again: {got}");
        assert_eq!(got["description"], "production receiver");
        let list = srv.get("/api/v1/webhooks", &acct.key).await;
        assert_eq!(list.header("x-total-count"), Some("1"));
        assert!(!list.body.to_string().contains(secret));

        let patched = srv.send(Method::PATCH, &format!("/api/v1/webhooks/{id}"), Some(&acct.key),
            Some(json!({"url": "https://hooks.example.com/v2", "events": []}))).await;
        assert_eq!(patched.status, 200, "{}", patched.body);
        assert_eq!(patched.body["url"], "https://hooks.example.com/v2");
        assert_eq!(patched.body["events"], json!([]));

        let off = srv.send(Method::POST, &format!("/api/v1/webhooks/{id}/disable"), Some(&acct.key), None).await;
        assert_eq!((off.status, &off.body["enabled"]), (200, &json!(false)));
        assert_eq!(off.body["disabled_reason"], "disabled by a user");
        let test = srv.send(Method::POST, &format!("/api/v1/webhooks/{id}/test"), Some(&acct.key), None).await;
        assert_eq!(test.status, 409, "a disabled endpoint gets no test: {}", test.body);
        let on = srv.send(Method::POST, &format!("/api/v1/webhooks/{id}/enable"), Some(&acct.key), None).await;
        assert_eq!((on.status, &on.body["enabled"]), (200, &json!(true)));
        assert_eq!(on.body["disabled_reason"], Value::Null);

        // Another account sees nothing of it.
        for (method, path) in [
            (Method::GET, format!("/api/v1/webhooks/{id}")),
            (Method::PATCH, format!("/api/v1/webhooks/{id}")),
            (Method::DELETE, format!("/api/v1/webhooks/{id}")),
            (Method::POST, format!("/api/v1/webhooks/{id}/rotate-secret")),
            (Method::GET, format!("/api/v1/webhooks/{id}/deliveries")),
        ] {
            let r = srv.send(method.clone(), &path, Some(&other.key), Some(json!({}))).await;
            assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
        }

        let gone = srv.send(Method::DELETE, &format!("/api/v1/webhooks/{id}"), Some(&acct.key), None).await;
        assert_eq!(gone.status, 204);
        assert_eq!(srv.get(&format!("/api/v1/webhooks/{id}"), &acct.key).await.status, 404);
    }

    async fn endpoints_and_events_refuse_bad_input_with_the_field_named(srv) {
        let acct = srv.account("Strict").await;
        for (body, field) in [
            (json!({"url": "ftp://example.com/"}), "url"),
            (json!({"url": "https://user:pw@example.com/"}), "url"),
            (json!({"url": "https://example.com/#frag"}), "url"),
            (json!({"url": "https://example.com/", "events": ["post created"]}), "events"),
            (json!({"url": "https://example.com/", "secret": "whsec_c2hvcnQ="}), "secret"),
        ] {
            let r = srv.send(Method::POST, "/api/v1/webhooks", Some(&acct.key), Some(body.clone())).await;
            assert_eq!(r.status, 400, "{body}: {}", r.body);
            assert_eq!(r.body["error"]["details"]["field"], field, "{body}: {}", r.body);
        }
        let missing = srv.send(Method::POST, "/api/v1/webhooks", Some(&acct.key), Some(json!({}))).await;
        assert_eq!(missing.status, 400);

        for (body, field) in [
            (json!({"type": "post..created", "data": {}}), "type"),
            (json!({"type": "post.created", "data": [1, 2]}), "data"),
            (json!({"type": "post.created", "data": {"big": "x".repeat(70_000)}}), "data"),
        ] {
            let r = srv.send(Method::POST, "/api/v1/events", Some(&acct.key), Some(body)).await;
            assert_eq!(r.status, 400, "{}", r.body);
            assert_eq!(r.body["error"]["details"]["field"], field, "{}", r.body);
        }

        let (reader, _) = srv.create_key(&acct.key, json!({"name": "reader", "scope": "read"})).await;
        let r = srv.send(Method::POST, "/api/v1/webhooks", Some(&reader), Some(json!({"url": "https://example.com/"}))).await;
        assert_eq!(r.status, 403, "a read key cannot add endpoints");
        let r = srv.send(Method::POST, "/api/v1/events", Some(&reader), Some(json!({"type": "a.b", "data": {}}))).await;
        assert_eq!(r.status, 403, "a read key cannot publish");
    }

    async fn a_published_event_arrives_signed_per_standard_webhooks(srv) {
        let acct = srv.account("Posts Inc").await;
        let mut rx = Receiver::start().await;
        let (id, secret) = endpoint(&srv, &acct, &format!("{}/hooks/posts", rx.base), json!(["post.created"])).await;

        let out = publish(&srv, &acct.key, "post.created", json!({"post": {"id": 42, "title": "Hello"}})).await;
        assert_eq!(out["deliveries"], 1);
        let event_id = out["id"].as_str().expect("event id");
        let got = rx.next(WAIT).await;
        assert_eq!(got.path, "/hooks/posts");
        assert_eq!(got.header("webhook-id"), event_id);
        assert_eq!(got.header("content-type"), "application/json");
        let ts: i64 = got.header("webhook-timestamp").parse().expect("unix seconds");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!((now - ts).abs() < 30, "the timestamp of the attempt");
        assert!(signed_by(&secret, &got), "the signature verifies: {:?}", got.headers);
        assert!(!signed_by("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &got));
        let body = got.json();
        assert_eq!(body["type"], "post.created");
        assert_eq!(body["account_id"], acct.id.as_str());
        assert_eq!(body["data"], json!({"post": {"id": 42, "title": "Hello"}}));
        assert!(time::OffsetDateTime::parse(body["timestamp"].as_str().expect("timestamp"),
            &time::format_description::well_known::Rfc3339).is_ok());

        // Not subscribed: not sent.
        let out = publish(&srv, &acct.key, "post.published", json!({})).await;
        assert_eq!(out["deliveries"], 0);
        rx.nothing_within(Duration::from_millis(700)).await;

        let log = wait_for_delivery(&srv, &acct.key, &id, |d| d["status"] == "succeeded").await;
        assert_eq!(log["event_id"], event_id);
        assert_eq!(log["attempts"], 1);
        assert_eq!(log["attempt_log"][0]["status_code"], 200);
        assert_eq!(log["attempt_log"][0]["response"], "answer 200");
    }

    async fn keygates_own_key_events_arrive_without_the_key_itself(srv) {
        let acct = srv.account("Own Events").await;
        let mut rx = Receiver::start().await;
        endpoint(&srv, &acct, &rx.base, json!(["key.*"])).await;

        let (plaintext, key_id) = srv.create_key(&acct.key, json!({"name": "CI key", "scope": "read"})).await;
        let created = rx.next(WAIT).await;
        assert!(!created.body.contains(&plaintext), "no plaintext key in an event");
        let body = created.json();
        assert_eq!(body["type"], "key.created");
        assert_eq!(body["data"]["key"]["id"], key_id.as_str());
        assert_eq!(body["data"]["key"]["name"], "CI key");

        let rolled = srv.send(Method::POST, &format!("/api/v1/auth/api-keys/{key_id}/roll"), Some(&acct.key), Some(json!({}))).await;
        assert_eq!(rolled.status, 201, "{}", rolled.body);
        let new_plaintext = rolled.body["key"].as_str().expect("new key").to_owned();
        let new_id = rolled.body["id"].as_str().expect("id").to_owned();
        let got = rx.next(WAIT).await;
        assert!(!got.body.contains(&new_plaintext));
        assert_eq!(got.json()["type"], "key.rolled");
        assert_eq!(got.json()["data"]["new_key"]["id"], new_id.as_str());

        let revoked = srv.send(Method::DELETE, &format!("/api/v1/auth/api-keys/{new_id}"), Some(&acct.key), None).await;
        assert_eq!(revoked.status, 200);
        let got = rx.next(WAIT).await;
        assert_eq!(got.json()["type"], "key.revoked");
        assert_eq!(got.json()["data"]["key"]["id"], new_id.as_str());
        assert!(!got.body.contains(&new_plaintext));
    }

    async fn a_rotated_secret_signs_beside_the_old_one(srv) {
        let acct = srv.account("Rotation").await;
        let mut rx = Receiver::start().await;
        let (id, old) = endpoint(&srv, &acct, &rx.base, json!([])).await;
        let r = srv.send(Method::POST, &format!("/api/v1/webhooks/{id}/rotate-secret"), Some(&acct.key), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let new = r.body["secret"].as_str().expect("secret").to_owned();
        assert_ne!(new, old);
        assert!(r.body["previous_secret_expires_at"].is_string());

        let t = srv.send(Method::POST, &format!("/api/v1/webhooks/{id}/test"), Some(&acct.key), None).await;
        assert_eq!(t.status, 202, "{}", t.body);
        let got = rx.next(WAIT).await;
        assert_eq!(got.json()["type"], "webhook.test");
        assert_eq!(got.header("webhook-signature").split(' ').count(), 2, "two signatures");
        assert!(signed_by(&new, &got), "the new secret signs");
        assert!(signed_by(&old, &got), "the old secret still signs");

        // A secret of one's own.
        let mine = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let r = srv.send(Method::POST, &format!("/api/v1/webhooks/{id}/rotate-secret"), Some(&acct.key),
            Some(json!({"secret": mine}))).await;
        assert_eq!(r.body["secret"], mine);
    }

    async fn a_failed_delivery_is_retried_with_the_same_webhook_id(srv) {
        let acct = srv.account("Retry").await;
        let mut rx = Receiver::start().await;
        rx.reply_with([Reply::status(503)]);
        let (id, secret) = endpoint(&srv, &acct, &rx.base, json!([])).await;
        let out = publish(&srv, &acct.key, "post.failed", json!({"post": 7})).await;
        let first = rx.next(WAIT).await;
        // The first retry comes 5 s (± 10 %) after the first attempt.
        let second = rx.next(Duration::from_secs(12)).await;
        assert_eq!(first.header("webhook-id"), out["id"].as_str().expect("id"));
        assert_eq!(second.header("webhook-id"), first.header("webhook-id"), "stable across retries");
        assert_eq!(second.body, first.body);
        assert!(signed_by(&secret, &first) && signed_by(&secret, &second));
        let t1: i64 = first.header("webhook-timestamp").parse().expect("ts");
        let t2: i64 = second.header("webhook-timestamp").parse().expect("ts");
        assert!(t2 - t1 >= 4, "each attempt signs its own timestamp: {t1} then {t2}");

        let log = wait_for_delivery(&srv, &acct.key, &id, |d| d["status"] == "succeeded").await;
        assert_eq!(log["attempts"], 2);
        let codes: Vec<_> = log["attempt_log"].as_array().expect("attempts").iter().map(|a| a["status_code"].clone()).collect();
        assert_eq!(codes, vec![json!(503), json!(200)]);
        assert_eq!(log["attempt_log"][0]["response"], "answer 503");
    }

    async fn retry_after_pushes_the_next_attempt_back(srv) {
        let acct = srv.account("Retry After").await;
        let mut rx = Receiver::start().await;
        let mut busy = Reply::status(429);
        busy.headers.push(("retry-after", "3600".into()));
        rx.reply_with([busy]);
        let (id, _) = endpoint(&srv, &acct, &rx.base, json!([])).await;
        publish(&srv, &acct.key, "post.created", json!({})).await;
        rx.next(WAIT).await;
        let d = wait_for_delivery(&srv, &acct.key, &id, |d| d["attempts"] == 1).await;
        let next = time::OffsetDateTime::parse(d["next_attempt_at"].as_str().expect("next"),
            &time::format_description::well_known::Rfc3339).expect("time");
        let wait = next - time::OffsetDateTime::now_utc();
        assert!(wait > time::Duration::minutes(55), "Retry-After: 3600 honoured, next in {wait}");
        assert_eq!(d["status"], "pending");
    }

    async fn a_410_disables_the_endpoint_and_replay_sends_the_same_event_again(srv) {
        let acct = srv.account("Gone").await;
        let mut rx = Receiver::start().await;
        rx.reply_with([Reply::status(410)]);
        let (id, _) = endpoint(&srv, &acct, &rx.base, json!([])).await;
        let out = publish(&srv, &acct.key, "campaign.started", json!({"campaign": 1})).await;
        rx.next(WAIT).await;
        let d = wait_for_delivery(&srv, &acct.key, &id, |d| d["status"] == "failed").await;
        assert_eq!(d["last_status_code"], 410);
        let ep = srv.get_ok(&format!("/api/v1/webhooks/{id}"), &acct.key).await;
        assert_eq!(ep["enabled"], false, "410 Gone disables: {ep}");
        assert!(ep["disabled_reason"].as_str().expect("reason").contains("410"));
        rx.nothing_within(Duration::from_millis(500)).await;

        let replay_path = format!("/api/v1/webhooks/{id}/deliveries/{}/replay", d["id"].as_str().expect("id"));
        let r = srv.send(Method::POST, &replay_path, Some(&acct.key), None).await;
        assert_eq!(r.status, 409, "no replay to a disabled endpoint: {}", r.body);
        srv.send(Method::POST, &format!("/api/v1/webhooks/{id}/enable"), Some(&acct.key), None).await;
        let r = srv.send(Method::POST, &replay_path, Some(&acct.key), None).await;
        assert_eq!(r.status, 202, "{}", r.body);
        let again = rx.next(WAIT).await;
        assert_eq!(again.header("webhook-id"), out["id"].as_str().expect("id"), "the same webhook-id");
        assert_eq!(again.json()["data"], json!({"campaign": 1}));
        let log = deliveries(&srv, &acct.key, &id).await;
        assert_eq!(log.len(), 2, "the replay is a delivery of its own");
    }

    async fn redirects_are_not_followed_and_slow_receivers_time_out(srv) {
        let acct = srv.account("Odd Receivers").await;
        let mut rx = Receiver::start().await;
        let mut moved = Reply::status(302);
        moved.headers.push(("location", format!("{}/elsewhere", rx.base)));
        let mut slow = Reply::status(200);
        slow.delay = Duration::from_secs(4);
        rx.reply_with([moved, slow]);
        let (id, _) = endpoint(&srv, &acct, &format!("{}/first", rx.base), json!([])).await;
        publish(&srv, &acct.key, "post.created", json!({})).await;
        assert_eq!(rx.next(WAIT).await.path, "/first");
        let d = wait_for_delivery(&srv, &acct.key, &id, |d| d["attempts"] == 1).await;
        assert_eq!(d["last_status_code"], 302);
        assert_eq!(d["status"], "pending", "a redirect is a failed attempt");
        rx.nothing_within(Duration::from_millis(500)).await;

        let t = srv.send(Method::POST, &format!("/api/v1/webhooks/{id}/test"), Some(&acct.key), None).await;
        assert_eq!(t.status, 202);
        rx.next(WAIT).await;
        let d = wait_for_delivery(&srv, &acct.key, &id, |d| d["attempts"] == 1 && d["event_type"] == "webhook.test").await;
        assert_eq!(d["last_status_code"], Value::Null);
        assert!(d["last_error"].as_str().expect("error").contains("no complete response"), "{d}");
    }
}

mod private_destinations {
    use super::*;

    async fn refused(backend: Backend) {
        let Some(srv) = TestServer::start_with(backend, |c| {
            c.webhook_poll_interval = Duration::from_millis(100);
        })
        .await
        else {
            eprintln!("SKIPPED: private_destinations on PostgreSQL");
            return;
        };
        let acct = srv.account("Sneaky").await;
        let mut rx = Receiver::start().await;
        let port = rx.base.rsplit(':').next().expect("port").to_owned();
        // An address that is private as written is refused when the endpoint is registered.
        for url in [
            rx.base.clone(),
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            "http://169.254.169.254/latest/meta-data/".to_owned(),
        ] {
            let r = srv
                .send(
                    Method::POST,
                    "/api/v1/webhooks",
                    Some(&acct.key),
                    Some(json!({"url": url})),
                )
                .await;
            assert_eq!(r.status, 400, "{url}: {}", r.body);
            assert_eq!(r.body["error"]["details"]["field"], "url");
        }
        // A name is resolved at each delivery, and refused when it points somewhere private.
        for url in [
            format!("http://localhost:{port}/"),
            format!("http://LocalHost:{port}/x"),
        ] {
            let (id, _) = endpoint(&srv, &acct, &url, json!([])).await;
            let t = srv
                .send(
                    Method::POST,
                    &format!("/api/v1/webhooks/{id}/test"),
                    Some(&acct.key),
                    None,
                )
                .await;
            assert_eq!(t.status, 202);
            let d = wait_for_delivery(&srv, &acct.key, &id, |d| d["attempts"] == 1).await;
            let error = d["last_error"].as_str().expect("an error");
            assert!(
                error.contains("private, loopback or link-local"),
                "{url}: {error}"
            );
            assert_eq!(d["last_status_code"], Value::Null);
        }
        rx.nothing_within(Duration::from_millis(300)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        refused(Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        refused(Backend::Postgres).await
    }
}

/// Two nodes on one PostgreSQL database share the deliveries: every event arrives, and the
/// leases keep both from sending the same delivery (at-least-once allows a rare duplicate
/// only after a lease runs out, which cannot happen here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_the_deliveries_on_postgres() {
    let Some(a) = start(Backend::Postgres).await else {
        eprintln!("SKIPPED: two_nodes_share_the_deliveries_on_postgres");
        return;
    };
    let b = a.another_node().await;
    let acct = a.account("Cluster").await;
    let mut rx = Receiver::start().await;
    endpoint(&a, &acct, &rx.base, json!(["order.*"])).await;
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..60 {
        let node = if i % 2 == 0 { &a } else { &b };
        let out = publish(node, &acct.key, "order.paid", json!({"order": i})).await;
        ids.insert(out["id"].as_str().expect("id").to_owned());
    }
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < ids.len() {
        let got = rx.next(WAIT).await;
        *seen.entry(got.header("webhook-id").to_owned()).or_insert(0) += 1;
    }
    rx.nothing_within(Duration::from_millis(500)).await;
    assert_eq!(
        seen.keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        ids
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "no delivery sent twice: {seen:?}"
    );
    b.shutdown().await;
    a.shutdown().await;
}

/// A webhook test server with more of its configuration changed.
async fn start_adjusted(
    backend: Backend,
    adjust: impl FnOnce(&mut keygate_server::Config),
) -> Option<TestServer> {
    TestServer::start_with(backend, |c| {
        c.webhooks_allow_private = true;
        c.webhook_poll_interval = Duration::from_millis(100);
        c.webhook_timeout = Duration::from_secs(2);
        c.webhook_lease = Duration::from_secs(5);
        adjust(c);
    })
    .await
}

/// Receives events until one of `event_type` comes; returns its body.
async fn event_of(rx: &mut Receiver, event_type: &str) -> Value {
    loop {
        let got = rx.next(WAIT).await;
        let body = got.json();
        if body["type"] == event_type {
            return body;
        }
    }
}

async fn account_events(backend: Backend) {
    let Some(srv) = start_adjusted(backend, |c| {
        crate::harness::with_plan(c, "tiny", "4/minute", Some(100));
        c.route_costs
            .push(("GET".into(), "/api/v1/auth/me".into(), 46));
    })
    .await
    else {
        eprintln!("SKIPPED: account events on PostgreSQL");
        return;
    };
    let acct = srv.account_on_plan("Tiny Co", Some("tiny")).await;
    let mut rx = Receiver::start().await;
    endpoint(
        &srv,
        &acct,
        &rx.base,
        json!(["user.created", "credits.low", "ratelimit.exceeded"]),
    )
    .await;

    let r = srv
        .send(
            Method::POST,
            &format!("/api/v1/accounts/{}/users", acct.id),
            Some(&acct.key),
            Some(json!({"email": "dev@tiny.test", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let user = event_of(&mut rx, "user.created").await;
    assert_eq!(user["data"]["user"]["email"], "dev@tiny.test");
    assert!(
        !user.to_string().contains("correct horse"),
        "no password in events"
    );

    // 100 credits, 46 a call: 54 left, then 8, below a tenth of the plan's 100.
    // (Creating the endpoint and the user spent two of the 4 calls a minute.)
    assert_eq!(srv.get("/api/v1/auth/me", &acct.key).await.status, 200);
    assert_eq!(srv.get("/api/v1/auth/me", &acct.key).await.status, 200);
    let low = event_of(&mut rx, "credits.low").await;
    assert_eq!(low["data"], json!({"balance": 8, "threshold": 10}));
    assert_eq!(srv.get("/api/v1/auth/me", &acct.key).await.status, 429);
    let limited = event_of(&mut rx, "ratelimit.exceeded").await;
    assert_eq!(limited["data"]["limit"], 4);
    // Once a minute at most, however many requests are refused.
    for _ in 0..5 {
        assert_eq!(srv.get("/api/v1/auth/me", &acct.key).await.status, 429);
    }
    rx.nothing_within(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_credit_and_rate_limit_events_arrive_once_on_sqlite() {
    account_events(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_credit_and_rate_limit_events_arrive_once_on_postgres() {
    account_events(Backend::Postgres).await
}

/// An endpoint failing "for days" (here: for 3 seconds) is disabled, and the account's other
/// endpoints hear about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_too_long_is_disabled_and_its_owner_told() {
    let srv = start_adjusted(Backend::Sqlite, |c| {
        c.webhook_disable_after = Duration::from_secs(3);
    })
    .await
    .expect("sqlite");
    let acct = srv.account("Flaky").await;
    let mut broken = Receiver::start().await;
    broken.by_default(Reply::status(500));
    let mut ops = Receiver::start().await;
    let (bad, _) = endpoint(&srv, &acct, &broken.base, json!(["post.*"])).await;
    endpoint(&srv, &acct, &ops.base, json!(["webhook.endpoint.disabled"])).await;

    publish(&srv, &acct.key, "post.created", json!({})).await;
    broken.next(WAIT).await;
    broken.next(Duration::from_secs(12)).await;
    let told = event_of(&mut ops, "webhook.endpoint.disabled").await;
    assert_eq!(told["data"]["endpoint_id"], bad.as_str());
    assert!(told["data"]["reason"]
        .as_str()
        .expect("reason")
        .contains("failed since"));
    let ep = srv
        .get_ok(&format!("/api/v1/webhooks/{bad}"), &acct.key)
        .await;
    assert_eq!(ep["enabled"], false);
}

/// `key.expiring` goes out once for a key that expires within a week.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_about_to_expire_is_announced_once() {
    let srv = start(Backend::Sqlite).await.expect("sqlite");
    let acct = srv.account("Expiring").await;
    let mut rx = Receiver::start().await;
    endpoint(&srv, &acct, &rx.base, json!(["key.expiring"])).await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::days(3);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let (plaintext, id) = srv
        .create_key(&acct.key, json!({"name": "temp", "expires_at": soon}))
        .await;
    srv.create_key(&acct.key, json!({"name": "forever"})).await;
    for _ in 0..2 {
        keygate_server::webhooks::worker::warn_expiring_keys(&srv.state)
            .await
            .expect("scan");
    }
    let got = rx.next(WAIT).await;
    assert!(!got.body.contains(&plaintext));
    let body = got.json();
    assert_eq!(body["type"], "key.expiring");
    assert_eq!(body["data"]["key"]["id"], id.as_str());
    rx.nothing_within(Duration::from_millis(500)).await;
}
