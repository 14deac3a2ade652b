//! The test harness: a real server per test on a free port, its own empty database, and a small
//! HTTP client that checks the status it expects.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keygate_server::service::accounts::{self, NewAccount};
use keygate_server::{AppState, Config, RunningServer};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub base: String,
    pub state: AppState,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub backend: Backend,
    server: Option<RunningServer>,
}

pub struct TestAccount {
    pub id: String,
    pub user_id: String,
    /// The account's first admin key.
    pub key: String,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body of an error answer: `{"error": {"code", "message"}}`; panics on another shape.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {}", self.body))
    }
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "keygate-it-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

static SKIP_NOTICE: AtomicBool = AtomicBool::new(false);

/// The PostgreSQL server of the suite, if one was given.
pub fn postgres_base_url() -> Option<String> {
    match std::env::var("KEYGATE_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if !SKIP_NOTICE.swap(true, Ordering::Relaxed) {
                eprintln!("SKIPPED: PostgreSQL variants (KEYGATE_TEST_DATABASE_URL is not set)");
            }
            None
        }
    }
}

/// A fresh database URL for `backend`, or `None` when that backend is not available here.
pub async fn fresh_database(backend: Backend, data_dir: &std::path::Path) -> Option<String> {
    match backend {
        Backend::Sqlite => Some(format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("keygate.db").display()
        )),
        Backend::Postgres => {
            let base = postgres_base_url()?;
            Some(keygate_store_sql::testing::fresh_postgres_database(&base).await)
        }
    }
}

impl TestServer {
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a server whose configuration `adjust` may change first.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<Self> {
        let data_dir = temp_dir("srv");
        let database_url = fresh_database(backend, &data_dir).await?;
        let mut config = Config::with_data_dir(data_dir.clone());
        config.database_url = Some(database_url.clone());
        // Usage is flushed only when a test asks, so a test can see that requests alone
        // write nothing.
        config.usage_flush_interval = Duration::from_secs(3600);
        adjust(&mut config);
        let state = AppState::open(config).await.expect("server state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = keygate_server::start(state.clone(), listener).expect("start");
        Some(TestServer {
            base: format!("http://{}", server.addr),
            state,
            client: reqwest::Client::new(),
            data_dir,
            database_url,
            backend,
            server: Some(server),
        })
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
    }

    pub async fn account(&self, name: &str) -> TestAccount {
        self.account_on_plan(name, None).await
    }

    pub async fn account_on_plan(&self, name: &str, plan: Option<&str>) -> TestAccount {
        let created = accounts::create_account(
            &self.state,
            NewAccount {
                name: name.into(),
                email: format!("owner@{}.test", name.to_lowercase().replace(' ', "-")),
                plan: plan.map(str::to_owned),
                password: None,
                first_name: "Olive".into(),
                last_name: "Owner".into(),
            },
        )
        .await
        .expect("create account");
        TestAccount {
            id: created.account.id.to_string(),
            user_id: created.owner.id.to_string(),
            key: created.plaintext.into_plaintext(),
        }
    }

    pub async fn operator_key(&self) -> String {
        let (_, key) = accounts::create_operator_key(&self.state, "ops")
            .await
            .expect("operator key");
        key.into_plaintext()
    }

    /// Creates a key with `body` using `key`; returns (plaintext, id).
    pub async fn create_key(&self, key: &str, body: Value) -> (String, String) {
        let r = self
            .send(Method::POST, "/api/v1/auth/api-keys", Some(key), Some(body))
            .await;
        assert_eq!(r.status, 201, "create key: {}", r.body);
        (
            r.body["key"].as_str().expect("key").to_owned(),
            r.body["id"].as_str().expect("id").to_owned(),
        )
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::read(req.send().await.expect("request")).await
    }

    pub async fn read(resp: reqwest::Response) -> Resp {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    /// A Crossbar request: `X-Auth-Token` when `token` is given, body wrapped by the caller.
    pub async fn v2(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.header("x-auth-token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::read(req.send().await.expect("request")).await
    }

    /// `PUT /v2/api_auth` with `key`; returns (auth_token, data).
    pub async fn api_auth(&self, key: &str) -> (String, Value) {
        let r = self
            .v2(
                Method::PUT,
                "/v2/api_auth",
                None,
                Some(serde_json::json!({"data": {"api_key": key}})),
            )
            .await;
        assert_eq!(r.status, 201, "api_auth: {}", r.body);
        (
            r.body["auth_token"]
                .as_str()
                .expect("auth_token")
                .to_owned(),
            r.body["data"].clone(),
        )
    }

    /// A second server on the same database (another node of the cluster).
    pub async fn another_node(&self) -> TestServer {
        self.another_node_with(|_| {}).await
    }

    /// Another node whose settings `adjust` may change first.
    pub async fn another_node_with(&self, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let data_dir = self.data_dir.clone();
        let url = self.database_url.clone();
        // The same settings as this node: another node of one deployment.
        let mut config = self.state.config.clone();
        adjust(&mut config);
        let state = AppState::open(config).await.expect("second node state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = keygate_server::start(state.clone(), listener).expect("start");
        TestServer {
            base: format!("http://{}", server.addr),
            state,
            client: reqwest::Client::new(),
            data_dir,
            database_url: url,
            // Not Sqlite: dropping the second node must leave the shared data dir alone.
            backend: Backend::Postgres,
            server: Some(server),
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.send(Method::GET, path, Some(key), None).await
    }

    /// GET expecting `status`; returns the body.
    pub async fn get_ok(&self, path: &str, key: &str) -> Value {
        let r = self.get(path, key).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.body
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.backend == Backend::Sqlite {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Declares tests that run on every backend: `on_both_backends! { async fn name(srv) { … } }`
/// makes `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($(async fn $name:ident($srv:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                #[allow(unused_imports)]
                use $crate::harness::*;

                async fn body($srv: TestServer) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    body(TestServer::start(Backend::Sqlite).await.expect("sqlite always runs")).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    match TestServer::start(Backend::Postgres).await {
                        Some(srv) => body(srv).await,
                        None => eprintln!("SKIPPED: {} on PostgreSQL", stringify!($name)),
                    }
                }
            }
        )*
    };
}

pub fn quota(s: &str) -> keygate_core::gcra::Quota {
    s.parse().expect("quota")
}

/// Adds a plan to a test server's configuration.
pub fn with_plan(c: &mut Config, name: &str, rate_limit: &str, monthly_credits: Option<u64>) {
    c.plans.insert(
        name.to_owned(),
        keygate_server::state::Plan {
            rate_limit: quota(rate_limit),
            monthly_credits,
        },
    );
}

/// A config file giving the processes of one test cluster the same master key (they share a
/// PostgreSQL database). Through a file, not the environment: the environment of the test
/// process is inherited by every binary any test starts.
pub fn cluster_config(dir: &std::path::Path) -> String {
    let path = dir.join("cluster.toml");
    std::fs::write(
        &path,
        "master_key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n",
    )
    .expect("write config");
    path.display().to_string()
}

/// Tests that make a burst of load, or time one, take turns: on a two-core machine a burst
/// beside another makes the timings (and Redis's 250 ms answer deadline, past which a node
/// limits on its own) meaningless.
pub async fn heavy_load_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}
