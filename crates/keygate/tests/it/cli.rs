//! The binary as a person runs it: `serve`, `admin …`, settings from flags, environment and
//! file.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::temp_dir;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keygate"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A `keygate serve` child process, killed on drop.
pub struct ServeProcess {
    pub child: Child,
    pub base: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn serve(args: &[&str], log: &Path) -> ServeProcess {
    let port = free_port();
    let log_file = std::fs::File::create(log).expect("log file");
    let child = bin()
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .env("KEYGATE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("spawn keygate serve");
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ServeProcess { child, base }
}

pub fn create_account(args: &[&str]) -> serde_json::Value {
    let out = bin()
        .args(["admin", "create-account", "--json"])
        .args(args)
        .env_remove("KEYGATE_KEY_PREFIX")
        .output()
        .expect("run admin");
    assert!(
        out.status.success(),
        "admin failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

#[tokio::test]
async fn admin_create_account_prints_exactly_three_fields_and_works_while_the_server_runs() {
    let dir = temp_dir("cli");
    let data = dir.join("data");
    let data_s = data.to_str().expect("utf8 path");
    let server = serve(&["--data-dir", data_s], &dir.join("server.log")).await;
    let created = create_account(&[
        "--name",
        "Acme",
        "--email",
        "Ops@Acme.Test",
        "--plan",
        "pro",
        "--data-dir",
        data_s,
    ]);
    let obj = created.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["account_id", "api_key", "user_id"]);
    let key = created["api_key"].as_str().expect("key");
    let me: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/auth/me", server.base))
        .bearer_auth(key)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["username"], "ops@acme.test");
    assert_eq!(me["account"]["id"], created["account_id"]);
    assert_eq!(me["account"]["plan"], "pro");
    assert_eq!(me["key"]["scope"], "admin");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn settings_come_from_flags_then_environment_then_the_config_file() {
    let dir = temp_dir("cfg");
    let file = dir.join("keygate.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\nkey_prefix = \"sk\"\n",
            dir.join("data").to_str().expect("utf8")
        ),
    )
    .expect("write");
    let cfg = file.to_str().expect("utf8");
    let run = |extra: &[&str], env: Option<&str>| {
        let mut cmd = bin();
        cmd.args([
            "admin",
            "create-account",
            "--json",
            "--config",
            cfg,
            "--email",
            "a@b.test",
        ])
        .args(extra);
        cmd.env_remove("KEYGATE_KEY_PREFIX");
        if let Some(p) = env {
            cmd.env("KEYGATE_KEY_PREFIX", p);
        }
        let out = cmd.output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v["api_key"].as_str().expect("key").to_owned()
    };
    assert!(
        run(&["--name", "file"], None).starts_with("sk_live_"),
        "the file's prefix"
    );
    assert!(
        run(&["--name", "env"], Some("ap")).starts_with("ap_live_"),
        "environment beats the file"
    );
    assert!(
        run(&["--name", "flag", "--key-prefix", "xk"], Some("ap")).starts_with("xk_live_"),
        "the flag beats both"
    );
    assert!(
        dir.join("data").join("keygate.db").exists(),
        "data_dir came from the file"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_wrong_setting_stops_the_start_with_a_message_naming_it() {
    let dir = temp_dir("badcfg");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "listen = \"not an address\"\n").expect("write");
    let out = bin()
        .args(["serve", "--config", file.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen") && err.contains("bad.toml"), "{err}");

    std::fs::write(&file, "listne = \"127.0.0.1:1\"\n").expect("write");
    let out = bin()
        .args(["serve", "--config", file.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listne"));

    let out = bin()
        .args([
            "serve",
            "--key-prefix",
            "Bad_Prefix",
            "--data-dir",
            dir.to_str().expect("utf8"),
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("key_prefix"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn openapi_and_migrate_commands_work_without_a_server() {
    let out = bin().arg("openapi").output().expect("run");
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(doc["paths"]["/api/v1/auth/api-keys"].is_object());
    let dir = temp_dir("migrate");
    let out = bin()
        .args(["migrate", "--data-dir", dir.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("keygate.db").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn admin_commands_work_against_postgres_too() {
    let Some(base) = crate::harness::postgres_base_url() else {
        eprintln!("SKIPPED: admin_commands_work_against_postgres_too");
        return;
    };
    let url = keygate_store_sql::testing::fresh_postgres_database(&base).await;
    let created = create_account(&[
        "--name",
        "PgCo",
        "--email",
        "pg@co.test",
        "--database-url",
        &url,
    ]);
    assert!(created["api_key"]
        .as_str()
        .expect("key")
        .starts_with("ak_live_"));
    let out = bin()
        .args([
            "admin",
            "create-operator-key",
            "--json",
            "--database-url",
            &url,
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["api_key"].is_string());
    keygate_store_sql::testing::drop_postgres_database(&base, &url).await;
}

#[tokio::test]
async fn each_request_is_logged_as_one_json_line_naming_the_request() {
    let dir = temp_dir("reqlog");
    let data = dir.join("data");
    let data_s = data.to_str().expect("utf8 path");
    let log = dir.join("server.log");
    let server = serve(&["--data-dir", data_s, "--log-format", "json"], &log).await;
    let created = create_account(&[
        "--name",
        "Acme",
        "--email",
        "ops@acme.test",
        "--data-dir",
        data_s,
    ]);
    let key = created["api_key"].as_str().expect("key");
    let answer = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/auth/me?secret=query-not-logged",
            server.base
        ))
        .bearer_auth(key)
        .header("x-request-id", "trace-me-1")
        .send()
        .await
        .expect("me");
    assert_eq!(answer.status(), 200);
    // Request lines are written in batches (at most a fifth of a second apart).
    let started = Instant::now();
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("trace-me-1")) {
            assert!(!text.contains(key), "the key is in the log");
            assert!(
                !text.contains("query-not-logged"),
                "the query is in the log"
            );
            break line.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no log line for the request: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object a line");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["fields"]["message"], "handled");
    assert_eq!(v["fields"]["status"], 200);
    assert!(v["fields"]["latency_us"].is_u64(), "{v}");
    assert_eq!(v["span"]["request_id"], "trace-me-1");
    assert_eq!(v["span"]["method"], "GET");
    assert_eq!(v["span"]["path"], "/api/v1/auth/me");
    assert_eq!(v["span"]["client"], "127.0.0.1");
    // Lines outside a request (start-up) name none.
    let text = std::fs::read_to_string(&log).expect("log");
    let first: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("a line")).expect("JSON");
    assert!(first.get("span").is_none(), "{first}");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
