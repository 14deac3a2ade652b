//! Two tests:
//!
//! - `posts_api_directly_with_identity_headers_set_by_hand`: the posts API alone, every route,
//!   with the `X-Keygate-*` headers a gateway would add set by hand.
//! - `readme_walkthrough_through_the_keygate_gateway`: every step of README.md, for real:
//!   `keygate serve`, `posts-api`, `keygate gateway` sharing a temporary data dir, an account on
//!   the starter plan, a read and a write key, and the calls of the walk-through.
//!
//! The keygate binary is `$KEYGATE_BIN`, else the `keygate` beside this package's binary (the
//! workspace's `target/debug/keygate`): build it first with `cargo build -p keygate`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const START_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Processes and files

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("posts-api-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop; its stderr goes to `log`.
struct Proc {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Proc {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if the process has exited.
    fn assert_running(&mut self, hint: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}) while starting.{hint}\n--- its stderr ---\n{}",
                self.name,
                self.log_text()
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn log_file(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).expect("create log file"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts `posts-api --listen 127.0.0.1:0` and reads the address it prints.
async fn start_posts_api(dir: &Path) -> (Proc, String) {
    let log = dir.join("posts-api.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_posts-api"))
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("POSTS_API_LISTEN")
        .stdout(Stdio::piped())
        .stderr(log_file(&log))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn posts-api");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let read =
        tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
    let proc = Proc {
        child,
        name: "posts-api",
        log,
    };
    let base = line
        .trim()
        .strip_prefix("posts-api listening on ")
        .map(str::to_owned);
    match (read, base) {
        (Ok(Ok(_)), Some(base)) => (proc, base),
        _ => panic!(
            "posts-api did not print its address (got {line:?}):\n{}",
            proc.log_text()
        ),
    }
}

/// `$KEYGATE_BIN`, else `keygate` beside the posts-api binary, else `<workspace>/target/debug`.
fn keygate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYGATE_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "KEYGATE_BIN={} is not a file", p.display());
        return p;
    }
    let exe = format!("keygate{}", std::env::consts::EXE_SUFFIX);
    let beside = Path::new(env!("CARGO_BIN_EXE_posts-api")).with_file_name(&exe);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/debug")
        .join(&exe);
    for p in [beside, workspace] {
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "the keygate binary was not found: build it first with `cargo build -p keygate` \
         (it is looked for beside {} and in <workspace>/target/debug), or set KEYGATE_BIN",
        env!("CARGO_BIN_EXE_posts-api")
    );
}

/// A keygate command with no `KEYGATE_*` setting inherited from the environment.
fn keygate(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYGATE_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("KEYGATE_LOG_FORMAT", "text").kill_on_drop(true);
    cmd
}

async fn wait_until<F, Fut>(proc: &mut Proc, hint: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        proc.assert_running(hint);
        if ready().await {
            return;
        }
        assert!(
            started.elapsed() < START_TIMEOUT,
            "{} did not start within {START_TIMEOUT:?}:\n{}",
            proc.name,
            proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(base: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("client"),
            base: base.to_owned(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Resp {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {}{path}: {e}", self.base));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Resp {
            status,
            headers,
            body,
        }
    }
}

fn seed_003_caption_error() -> Value {
    json!({"error": {
        "code": "INVALID_INPUT",
        "message": "Caption is required",
        "details": {"field": "caption", "reason": "Field is required"}
    }})
}

// ---------------------------------------------------------------------------------------------
// The posts API on its own

#[tokio::test]
async fn posts_api_directly_with_identity_headers_set_by_hand() {
    let dir = TempDir::new("direct");
    let (_posts, base) = start_posts_api(&dir.0).await;
    let api = Http::new(&base);
    let alice: &[(&str, &str)] = &[
        ("X-Keygate-Account-Id", "acct_alice"),
        ("X-Keygate-Key-Id", "key_alice_write"),
        ("X-Keygate-Scope", "write"),
    ];
    let bob: &[(&str, &str)] = &[
        ("X-Keygate-Account-Id", "acct_bob"),
        ("X-Keygate-Key-Id", "key_bob_admin"),
        ("X-Keygate-Scope", "admin"),
    ];

    // An empty list, in seed 003's shape.
    let r = api.send(Method::GET, "/api/posts", alice, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"data": [], "pagination": {
            "page": 1, "limit": 20, "totalCount": 0, "hasMore": false, "nextCursor": null
        }})
    );

    // Missing, null, empty or blank caption: exactly seed 003's error; also with no body at all.
    for body in [
        Some(json!({})),
        Some(json!({"caption": null})),
        Some(json!({"caption": "  "})),
        Some(json!({"status": "DRAFT"})),
        None,
    ] {
        let r = api
            .send(Method::POST, "/api/posts", alice, body.clone())
            .await;
        assert_eq!(r.status, 400, "{body:?}");
        assert_eq!(r.body, seed_003_caption_error(), "{body:?}");
    }
    for (body, field) in [
        (json!({"caption": 5}), "caption"),
        (json!({"caption": "x".repeat(2201)}), "caption"),
        (json!({"caption": "ok", "status": "ARCHIVED"}), "status"),
        (json!({"caption": "ok", "platform": 7}), "platform"),
        (json!(["not", "an", "object"]), "body"),
    ] {
        let r = api
            .send(Method::POST, "/api/posts", alice, Some(body))
            .await;
        assert_eq!(r.status, 400);
        assert_eq!(r.error_code(), "INVALID_INPUT");
        assert_eq!(r.body["error"]["details"]["field"], field, "{}", r.body);
    }

    // Create: createdBy comes from the identity headers.
    let r = api
        .send(
            Method::POST,
            "/api/posts",
            alice,
            Some(json!({"caption": "Hello", "platform": "Instagram"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let post = r.body;
    let id = post["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("post_"), "{id}");
    assert_eq!(post["caption"], "Hello");
    assert_eq!(post["status"], "DRAFT");
    assert_eq!(post["platform"], "instagram");
    assert_eq!(post["publishedAt"], Value::Null);
    assert_eq!(
        post["createdBy"],
        json!({"accountId": "acct_alice", "keyId": "key_alice_write"})
    );
    assert_eq!(post["updatedBy"], post["createdBy"]);

    // Without the headers (nothing vouched for the caller) createdBy is null, not invented.
    let r = api
        .send(
            Method::POST,
            "/api/posts",
            &[],
            Some(json!({"caption": "anon", "status": "scheduled"})),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["status"], "SCHEDULED");
    assert_eq!(
        r.body["createdBy"],
        json!({"accountId": null, "keyId": null})
    );

    // Read, update, publish.
    let r = api
        .send(Method::GET, &format!("/api/posts/{id}"), bob, None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, post);
    let r = api
        .send(
            Method::PUT,
            &format!("/api/posts/{id}"),
            bob,
            Some(json!({"caption": "Hello, edited"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["caption"], "Hello, edited");
    assert_eq!(r.body["platform"], "instagram", "kept");
    assert_eq!(r.body["createdBy"]["accountId"], "acct_alice");
    assert_eq!(
        r.body["updatedBy"],
        json!({"accountId": "acct_bob", "keyId": "key_bob_admin"})
    );
    let r = api
        .send(
            Method::PUT,
            &format!("/api/posts/{id}"),
            bob,
            Some(json!({"caption": ""})),
        )
        .await;
    assert_eq!((r.status, r.body), (400, seed_003_caption_error()));
    let r = api
        .send(
            Method::POST,
            &format!("/api/posts/{id}/publish"),
            alice,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "PUBLISHED");
    assert!(r.body["publishedAt"].is_string());
    let r = api
        .send(
            Method::POST,
            &format!("/api/posts/{id}/publish"),
            alice,
            None,
        )
        .await;
    assert_eq!((r.status, r.error_code()), (409, "CONFLICT"));

    // Filters.
    let r = api
        .send(Method::GET, "/api/posts?status=PUBLISHED", alice, None)
        .await;
    assert_eq!(r.body["pagination"]["totalCount"], 1);
    assert_eq!(r.body["data"][0]["id"], id.as_str());
    let r = api
        .send(Method::GET, "/api/posts?status=draft", alice, None)
        .await;
    assert_eq!(r.body["pagination"]["totalCount"], 0);
    let r = api
        .send(Method::GET, "/api/posts?platform=instagram", alice, None)
        .await;
    assert_eq!(r.body["pagination"]["totalCount"], 1);
    let r = api
        .send(Method::GET, "/api/posts?status=NOPE", alice, None)
        .await;
    assert_eq!((r.status, r.error_code()), (400, "INVALID_INPUT"));

    // Pagination: 2 + 23 = 25 posts, newest first.
    for i in 0..23 {
        let r = api
            .send(
                Method::POST,
                "/api/posts",
                alice,
                Some(json!({"caption": format!("post {i}")})),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let r = api.send(Method::GET, "/api/posts", alice, None).await;
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(20));
    assert_eq!(r.body["data"][0]["caption"], "post 22", "newest first");
    let p = &r.body["pagination"];
    assert_eq!(
        (p["page"].clone(), p["limit"].clone()),
        (json!(1), json!(20))
    );
    assert_eq!(
        (p["totalCount"].clone(), p["hasMore"].clone()),
        (json!(25), json!(true))
    );
    assert_eq!(p["nextCursor"], r.body["data"][19]["id"]);
    let r = api
        .send(Method::GET, "/api/posts?page=3&limit=10", alice, None)
        .await;
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        r.body["pagination"],
        json!({"page": 3, "limit": 10, "totalCount": 25, "hasMore": false, "nextCursor": null})
    );
    assert_eq!(r.body["data"][4]["caption"], "Hello, edited", "oldest last");
    let r = api
        .send(Method::GET, "/api/posts?page=2&limit=10", alice, None)
        .await;
    let cursor = r.body["pagination"]["nextCursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let by_page = api
        .send(Method::GET, "/api/posts?page=3&limit=10", alice, None)
        .await;
    let by_cursor = api
        .send(
            Method::GET,
            &format!("/api/posts?limit=10&cursor={cursor}"),
            alice,
            None,
        )
        .await;
    assert_eq!(
        by_cursor.body, by_page.body,
        "the cursor continues where page 2 ended"
    );
    let r = api
        .send(Method::GET, "/api/posts?limit=100", alice, None)
        .await;
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(25));
    for bad in [
        "limit=101",
        "limit=0",
        "page=0",
        "page=x",
        "cursor=post_nope",
    ] {
        let r = api
            .send(Method::GET, &format!("/api/posts?{bad}"), alice, None)
            .await;
        assert_eq!((r.status, r.error_code()), (400, "INVALID_INPUT"), "{bad}");
    }

    // Delete, then 404 everywhere.
    let r = api
        .send(Method::DELETE, &format!("/api/posts/{id}"), alice, None)
        .await;
    assert_eq!((r.status, r.body), (204, Value::Null));
    for (method, path) in [
        (Method::GET, format!("/api/posts/{id}")),
        (Method::PUT, format!("/api/posts/{id}")),
        (Method::DELETE, format!("/api/posts/{id}")),
        (Method::POST, format!("/api/posts/{id}/publish")),
    ] {
        let r = api
            .send(method.clone(), &path, alice, Some(json!({"caption": "x"})))
            .await;
        assert_eq!(r.status, 404, "{method} {path}");
        assert_eq!(
            r.body,
            json!({"error": {"code": "NOT_FOUND", "message": "Post not found"}})
        );
    }
    let r = api.send(Method::GET, "/api/nothing", alice, None).await;
    assert_eq!((r.status, r.error_code()), (404, "NOT_FOUND"));
    let r = api.send(Method::PATCH, "/api/posts", alice, None).await;
    assert_eq!((r.status, r.error_code()), (405, "METHOD_NOT_ALLOWED"));

    // whoami: the identity headers, and which credential headers (names only) arrived.
    let r = api.send(Method::GET, "/api/whoami", alice, None).await;
    assert_eq!(
        r.body,
        json!({"accountId": "acct_alice", "keyId": "key_alice_write", "scope": "write",
               "credentialReceived": false, "credentialHeaders": []})
    );
    let r = api
        .send(
            Method::GET,
            "/api/whoami",
            &[
                ("Authorization", "Bearer ak_live_secret"),
                ("X-API-Key", "ak_live_secret"),
            ],
            None,
        )
        .await;
    assert_eq!(
        r.body,
        json!({"accountId": null, "keyId": null, "scope": null,
               "credentialReceived": true, "credentialHeaders": ["authorization", "x-api-key"]})
    );
    assert!(
        !r.body.to_string().contains("secret"),
        "never echoes a credential"
    );
}

// ---------------------------------------------------------------------------------------------
// The README, step by step

#[tokio::test]
async fn readme_walkthrough_through_the_keygate_gateway() {
    let bin = keygate_bin();
    let dir = TempDir::new("walkthrough");
    let data = dir.0.join("data");
    let data_s = data.to_str().expect("utf-8 temp path").to_owned();

    // 1. Keygate: `keygate serve --data-dir ./data`.
    let port = free_port();
    let log = dir.0.join("serve.log");
    let child = keygate(&bin)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &data_s,
        ])
        .stdout(Stdio::null())
        .stderr(log_file(&log))
        .spawn()
        .expect("spawn keygate serve");
    let mut serve = Proc {
        child,
        name: "keygate serve",
        log,
    };
    let keygate_api = Http::new(&format!("http://127.0.0.1:{port}"));
    wait_until(&mut serve, "", || async {
        matches!(
            keygate_api.client.get(format!("{}/healthz", keygate_api.base)).send().await,
            Ok(r) if r.status() == 200
        )
    })
    .await;

    // 2. The posts API.
    let (_posts, posts_base) = start_posts_api(&dir.0).await;

    // 3. The gateway in front of it, sharing the data dir.
    let gw_port = free_port();
    let log = dir.0.join("gateway.log");
    let child = keygate(&bin)
        .args([
            "gateway",
            "--upstream",
            &posts_base,
            "--listen",
            &format!("127.0.0.1:{gw_port}"),
            "--data-dir",
            &data_s,
        ])
        .stdout(Stdio::null())
        .stderr(log_file(&log))
        .spawn()
        .expect("spawn keygate gateway");
    let mut gateway = Proc {
        child,
        name: "keygate gateway",
        log,
    };
    let hint = format!(
        " Does {} have the `gateway` command yet? Rebuild it with `cargo build -p keygate`.",
        bin.display()
    );
    wait_until(&mut gateway, &hint, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", gw_port))
            .await
            .is_ok()
    })
    .await;
    let gw = Http::new(&format!("http://127.0.0.1:{gw_port}"));

    // 4. An account on the starter plan, and its first (admin) key.
    let out = keygate(&bin)
        .args([
            "admin",
            "create-account",
            "--name",
            "Audenci",
            "--email",
            "you@example.com",
            "--plan",
            "starter",
            "--json",
            "--data-dir",
            &data_s,
        ])
        .output()
        .await
        .expect("run keygate admin create-account");
    assert!(
        out.status.success(),
        "create-account failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("--json output");
    let account_id = created["account_id"]
        .as_str()
        .expect("account_id")
        .to_owned();
    let admin_key = created["api_key"].as_str().expect("api_key").to_owned();
    let admin_auth = format!("Bearer {admin_key}");

    // 5. A read-only key and a read-write key.
    let mut keys = Vec::new();
    for (name, scope) in [("Read only", "read"), ("Read write", "write")] {
        let r = keygate_api
            .send(
                Method::POST,
                "/api/v1/auth/api-keys",
                &[("Authorization", &admin_auth)],
                Some(json!({"name": name, "scope": scope})),
            )
            .await;
        assert_eq!(r.status, 201, "create {scope} key: {}", r.body);
        assert_eq!(r.body["scope"], scope);
        keys.push((
            r.body["key"].as_str().expect("key").to_owned(),
            r.body["id"].as_str().expect("id").to_owned(),
        ));
    }
    let [(read_key, read_id), (write_key, write_id)] = <[_; 2]>::try_from(keys).expect("2 keys");
    let read_auth = format!("Bearer {read_key}");
    let write_auth = format!("Bearer {write_key}");
    let read: &[(&str, &str)] = &[("Authorization", &read_auth)];
    let write: &[(&str, &str)] = &[("Authorization", &write_auth)];

    // 6. The read-only key lists posts: 200, with the starter plan's rate-limit headers.
    let r = gw.send(Method::GET, "/api/posts", read, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"data": [], "pagination": {
            "page": 1, "limit": 20, "totalCount": 0, "hasMore": false, "nextCursor": null
        }})
    );
    assert_eq!(
        r.header("x-ratelimit-limit"),
        Some("100"),
        "starter: 100/hour"
    );
    let remaining = |r: &Resp| -> u64 {
        r.header("x-ratelimit-remaining")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("X-RateLimit-Remaining: {:?}", r.headers))
    };
    let first_remaining = remaining(&r);
    assert!(first_remaining < 100, "{first_remaining}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let reset: u64 = r
        .header("x-ratelimit-reset")
        .and_then(|v| v.parse().ok())
        .expect("X-RateLimit-Reset: Unix seconds");
    assert!(
        reset + 5 >= now && reset <= now + 3600 + 5,
        "reset {reset}, now {now}"
    );

    // 7. The read-only key may not create: 403 from the gateway; the upstream never sees it.
    let r = gw
        .send(
            Method::POST,
            "/api/posts",
            read,
            Some(json!({"caption": "Not allowed"})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.error_code(), "forbidden", "{}", r.body);
    assert!(r.body["error"]["message"].is_string(), "{}", r.body);
    let r = gw.send(Method::GET, "/api/posts", read, None).await;
    assert_eq!(r.body["pagination"]["totalCount"], 0, "nothing was created");
    assert!(remaining(&r) < first_remaining, "each call is counted");

    // 8. The read-write key creates a post: 201, createdBy names the Keygate account and key.
    let r = gw
        .send(
            Method::POST,
            "/api/posts",
            write,
            Some(json!({"caption": "Hello from behind Keygate", "platform": "instagram"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    let post = r.body;
    let post_id = post["id"].as_str().expect("post id").to_owned();
    assert_eq!(post["status"], "DRAFT");
    assert_eq!(
        post["createdBy"],
        json!({"accountId": account_id, "keyId": write_id})
    );

    // 9. Validation errors of the upstream pass through unchanged.
    let r = gw
        .send(
            Method::POST,
            "/api/posts",
            write,
            Some(json!({"platform": "instagram"})),
        )
        .await;
    assert_eq!((r.status, r.body), (400, seed_003_caption_error()));

    // 10. Anyone with a key of the account reads it; the write key edits and publishes it.
    let r = gw
        .send(Method::GET, &format!("/api/posts/{post_id}"), read, None)
        .await;
    assert_eq!((r.status, &r.body), (200, &post));
    let r = gw
        .send(
            Method::PUT,
            &format!("/api/posts/{post_id}"),
            write,
            Some(json!({"caption": "Hello again"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["caption"], "Hello again");
    let r = gw
        .send(
            Method::POST,
            &format!("/api/posts/{post_id}/publish"),
            read,
            None,
        )
        .await;
    assert_eq!((r.status, r.error_code()), (403, "forbidden"));
    let r = gw
        .send(
            Method::POST,
            &format!("/api/posts/{post_id}/publish"),
            write,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "PUBLISHED");
    assert_eq!(
        r.body["updatedBy"],
        json!({"accountId": account_id, "keyId": write_id})
    );
    let r = gw
        .send(Method::GET, "/api/posts?status=PUBLISHED", read, None)
        .await;
    assert_eq!(r.body["pagination"]["totalCount"], 1);

    // 11. No key, or a made-up one: 401 from the gateway.
    let r = gw.send(Method::GET, "/api/posts", &[], None).await;
    assert_eq!(
        (r.status, r.error_code()),
        (401, "unauthorized"),
        "{}",
        r.body
    );
    let r = gw
        .send(
            Method::GET,
            "/api/posts",
            &[("Authorization", "Bearer ak_live_madeup")],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (401, "unauthorized"),
        "{}",
        r.body
    );

    // 12. whoami: the identity headers arrived, the credential did not (Bearer or X-API-Key).
    let r = gw.send(Method::GET, "/api/whoami", read, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"accountId": account_id, "keyId": read_id, "scope": "read",
               "credentialReceived": false, "credentialHeaders": []})
    );
    let r = gw
        .send(
            Method::GET,
            "/api/whoami",
            &[("X-API-Key", &write_key)],
            None,
        )
        .await;
    assert_eq!(
        r.body,
        json!({"accountId": account_id, "keyId": write_id, "scope": "write",
               "credentialReceived": false, "credentialHeaders": []})
    );
    let r = gw
        .send(
            Method::GET,
            "/api/whoami",
            &[("Authorization", &admin_auth)],
            None,
        )
        .await;
    assert_eq!(r.body["scope"], "admin");
    assert_eq!(r.body["credentialReceived"], false);

    // 13. Delete: not with the read key; with the write key, then it is gone.
    let r = gw
        .send(Method::DELETE, &format!("/api/posts/{post_id}"), read, None)
        .await;
    assert_eq!((r.status, r.error_code()), (403, "forbidden"));
    let r = gw
        .send(
            Method::DELETE,
            &format!("/api/posts/{post_id}"),
            write,
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = gw
        .send(Method::GET, &format!("/api/posts/{post_id}"), read, None)
        .await;
    assert_eq!((r.status, r.error_code()), (404, "NOT_FOUND"));

    // 14. The starter plan's 100 requests/hour run out: 429 rate_limit_exceeded.
    let mut ok = 0;
    let limited = loop {
        let r = gw.send(Method::GET, "/api/posts", read, None).await;
        match r.status {
            200 => ok += 1,
            429 => break r,
            other => panic!("unexpected {other}: {}", r.body),
        }
        assert!(ok <= 100, "100 more calls were allowed on a 100/hour plan");
    };
    assert_eq!(
        limited.error_code(),
        "rate_limit_exceeded",
        "{}",
        limited.body
    );
    assert_eq!(limited.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));

    gateway.assert_running("");
    serve.assert_running("");
}
