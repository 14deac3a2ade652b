//! The binary as an operator runs it in production: stopped by SIGTERM under load and started
//! again without losing usage, its configuration checked before it starts, and HTTPS out of
//! the box with the self-signed certificate.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{bin, create_account, serve, ServeProcess};
use crate::harness::temp_dir;

fn signal(server: &ServeProcess, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), server.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits for the process to exit; its exit status.
fn wait_exit(server: &mut ServeProcess, within: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            started.elapsed() < within,
            "the server did not exit in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn usage_total(base: &str, key: &str) -> u64 {
    let rows: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/usage"))
        .bearer_auth(key)
        .send()
        .await
        .expect("usage")
        .json()
        .await
        .expect("json");
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| r["requests"].as_u64().expect("requests"))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_exits_zero_and_loses_no_usage() {
    let _turn = crate::harness::heavy_load_turn().await;
    let dir = temp_dir("sigterm");
    let data = dir.join("data");
    let config = dir.join("keygate.toml");
    // Usage is written only by the final flush: a lost flush would show.
    std::fs::write(
        &config,
        "usage_flush_seconds = 3600\n[plans.unlimited]\nrate_limit = \"1000000/second\"\n",
    )
    .expect("config");
    let args = [
        "--data-dir",
        data.to_str().expect("utf8"),
        "--config",
        config.to_str().expect("utf8"),
    ];
    let mut server = serve(&args, &dir.join("first.log")).await;
    let mut admin_args = vec![
        "--name",
        "Acme",
        "--email",
        "ops@acme.test",
        "--plan",
        "unlimited",
    ];
    admin_args.extend_from_slice(&args);
    let created = create_account(&admin_args);
    let key = created["api_key"].as_str().expect("key").to_owned();

    let answered = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (base, key, answered, refused) = (
            server.base.clone(),
            key.clone(),
            answered.clone(),
            refused.clone(),
        );
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let started = Instant::now();
            // Bounded: until the server stops answering, or 20 s at most.
            while started.elapsed() < Duration::from_secs(20) {
                match client
                    .get(format!("{base}/api/v1/auth/me"))
                    .bearer_auth(&key)
                    .send()
                    .await
                {
                    Ok(r) => {
                        assert_eq!(r.status(), 200, "every request before the stop is served");
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        refused.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(answered.load(Ordering::Relaxed) > 50, "the load is running");
    signal(&server, "TERM");
    for task in load {
        task.await.expect("load task");
    }
    assert!(
        refused.load(Ordering::Relaxed),
        "the server stopped accepting"
    );
    let status = wait_exit(&mut server, Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    let log = std::fs::read_to_string(dir.join("first.log")).expect("log");
    assert!(log.contains("keygate stopped"), "{log}");

    let restarted = serve(&args, &dir.join("second.log")).await;
    let counted = usage_total(&restarted.base, &key).await;
    assert_eq!(
        counted,
        answered.load(Ordering::Relaxed),
        "every request answered before SIGTERM is in the usage after the restart"
    );
    drop(restarted);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sigint_stops_the_server_cleanly_too() {
    let dir = temp_dir("sigint");
    let mut server = serve(
        &["--data-dir", dir.to_str().expect("utf8")],
        &dir.join("log"),
    )
    .await;
    signal(&server, "INT");
    let status = wait_exit(&mut server, Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The names of the process's threads that serve connections.
fn serving_threads(server: &ServeProcess) -> Vec<String> {
    let tasks = format!("/proc/{}/task", server.child.id());
    let mut names: Vec<String> = std::fs::read_dir(tasks)
        .expect("the process's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with("keygate-serve"))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_served_on_the_configured_serving_threads_or_the_shared_runtime() {
    for (threads, expected) in [
        (
            "3",
            &["keygate-serve-0", "keygate-serve-1", "keygate-serve-2"][..],
        ),
        ("0", &[][..]),
    ] {
        let dir = temp_dir("threads");
        let args = [
            "--data-dir",
            dir.to_str().expect("utf8"),
            "--serve-threads",
            threads,
        ];
        let mut server = serve(&args, &dir.join("log")).await;
        assert_eq!(
            serving_threads(&server),
            expected,
            "--serve-threads {threads}"
        );
        // Many connections at once, each with a few requests: all answered, wherever the
        // kernel put them.
        let mut clients = Vec::new();
        for _ in 0..12 {
            let base = server.base.clone();
            clients.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                for _ in 0..5 {
                    let r = client
                        .get(format!("{base}/api/v1/auth/me"))
                        .send()
                        .await
                        .expect("answered");
                    assert_eq!(r.status(), 401);
                }
            }));
        }
        for client in clients {
            client.await.expect("client");
        }
        signal(&server, "TERM");
        let status = wait_exit(&mut server, Duration::from_secs(30));
        assert!(status.success(), "--serve-threads {threads}: {status:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The nice value in a `/proc/.../stat` line (its 19th field; the name before it, in
/// parentheses, may hold spaces).
fn nice_in_stat(stat: &str) -> i64 {
    let rest = &stat[stat.rfind(')').expect("a stat line") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at the third field.
    fields[19 - 3].parse().expect("a nice value")
}

/// The nice values of the process's threads that serve connections.
fn serving_threads_nice(server: &ServeProcess) -> Vec<i64> {
    let tasks = format!("/proc/{}/task", server.child.id());
    std::fs::read_dir(tasks)
        .expect("the process's threads")
        .filter_map(|t| {
            let path = t.ok()?.path();
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            if !name.starts_with("keygate-serve") {
                return None;
            }
            Some(nice_in_stat(
                &std::fs::read_to_string(path.join("stat")).ok()?,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_threads_take_the_configured_nice_value() {
    let own = nice_in_stat(&std::fs::read_to_string("/proc/thread-self/stat").expect("stat"));
    // Raising one's nice value needs no privilege; lowering it below the current one does.
    let raised = (own + 5).min(19);
    for nice in [Some(raised), None] {
        let dir = temp_dir("nice");
        let mut args = vec![
            "--data-dir".to_owned(),
            dir.to_str().expect("utf8").to_owned(),
            "--serve-threads".to_owned(),
            "2".to_owned(),
        ];
        if let Some(n) = nice {
            args.extend(["--serve-nice".to_owned(), n.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = serve(&args, &dir.join("log")).await;
        let expected = nice.map_or(own, i64::from);
        assert_eq!(
            serving_threads_nice(&server),
            [expected, expected],
            "--serve-nice {nice:?}"
        );
        let r = reqwest::get(format!("{}/healthz", server.base))
            .await
            .expect("answered");
        assert_eq!(r.status(), 200);
        signal(&server, "TERM");
        let status = wait_exit(&mut server, Duration::from_secs(30));
        assert!(status.success(), "--serve-nice {nice:?}: {status:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn config_check(file: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = bin();
    cmd.args(["config", "check", "--config", file.to_str().expect("utf8")]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run config check")
}

#[test]
fn config_check_accepts_a_valid_file_and_names_what_is_wrong_in_a_bad_one() {
    let dir = temp_dir("check");
    let file = dir.join("keygate.toml");
    std::fs::write(
        &file,
        r#"
listen = "0.0.0.0:8443"
tls_self_signed = true
trusted_proxies = ["10.0.0.0/8", "192.0.2.1"]
refuse_plaintext_credentials = true
cors_allowed_origins = ["https://app.example.com"]
request_timeout = 20
idle_timeout = 30
max_connections = 5000
serve_threads = 3
serve_nice = -5
shutdown_timeout = 15
audit_retention_days = 90
"#,
    )
    .expect("write");
    let out = config_check(&file, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    assert!(
        !dir.join("data").exists(),
        "checking starts nothing and creates nothing"
    );

    let cases: [(&str, &[&str]); 8] = [
        (
            "serve_threads = 5000\n",
            &["serve_threads", "keygate.toml", "1024"],
        ),
        (
            "serve_nice = -21\n",
            &["serve_nice", "keygate.toml", "-20 to 19"],
        ),
        (
            "request_timeout = 0\n",
            &["request_timeout", "keygate.toml", "1 to 3600"],
        ),
        (
            "trusted_proxies = [\"not-a-network\"]\n",
            &["trusted_proxies", "keygate.toml", "CIDR"],
        ),
        (
            "cors_allowed_origins = [\"https://app.example.com/path\"]\n",
            &["cors_allowed_origins", "origin"],
        ),
        ("tls_cert = \"cert.pem\"\n", &["tls_cert", "tls_key"]),
        (
            "tls_cert = \"/no/such/cert.pem\"\ntls_key = \"/no/such/key.pem\"\n",
            &["tls_cert", "/no/such/cert.pem"],
        ),
        ("idle_timeuot = 5\n", &["idle_timeuot", "keygate.toml"]),
    ];
    for (text, expected) in cases {
        std::fs::write(&file, text).expect("write");
        let out = config_check(&file, &[]);
        assert!(!out.status.success(), "{text} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        for word in expected {
            assert!(err.contains(word), "{text}: {err:?} does not name {word:?}");
        }
    }

    std::fs::write(&file, "").expect("write");
    let out = config_check(&file, &[("KEYGATE_IDLE_TIMEOUT", "0")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEYGATE_IDLE_TIMEOUT"));
    let out = config_check(&file, &[("KEYGATE_REQUEST_TIMEOUT", "soon")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KEYGATE_REQUEST_TIMEOUT") && err.contains("--request-timeout"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_a_self_signed_certificate_answers_https() {
    let dir = temp_dir("https");
    let port = crate::cli::free_port();
    let log = std::fs::File::create(dir.join("log")).expect("log");
    let child = bin()
        .args([
            "serve",
            "--tls-self-signed",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--data-dir", dir.to_str().expect("utf8")])
        .stderr(log)
        .spawn()
        .expect("spawn");
    let mut server = ServeProcess {
        child,
        base: format!("https://localhost:{port}"),
    };
    let cert = dir.join("tls").join("self-signed.crt");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let r = loop {
        if cert.exists() {
            if let Ok(r) = crate::tls::HttpsConn::connect(&cert, true, addr).await {
                break r;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no HTTPS: {}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut conn = r;
    let r = conn.get("/healthz", None).await.expect("healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["strict-transport-security"], "max-age=31536000");
    // An HTTP/2 connection closes gracefully with the client's help (it acknowledges the
    // server's last ping); this test's thread blocks below, so the connection goes first.
    drop(conn);
    signal(&server, "TERM");
    assert!(wait_exit(&mut server, Duration::from_secs(30)).success());
    let _ = std::fs::remove_dir_all(dir);
}

/// Writes `text` padded with newlines (which PEM readers skip) to `len` bytes, and gives the
/// file back the modification time `mtime`: to the file watcher, nothing changed.
fn write_unnoticed(path: &std::path::Path, text: &str, len: usize, mtime: std::time::SystemTime) {
    let mut padded = text.to_owned();
    while padded.len() < len {
        padded.push('\n');
    }
    // Written aside and renamed into place, so the watcher never sees the file with the
    // write's own mtime (it would reload between the write and `set_modified`).
    let aside = path.with_extension("new");
    std::fs::write(&aside, padded).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&aside)
        .expect("open")
        .set_modified(mtime)
        .expect("set mtime");
    std::fs::rename(&aside, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate() {
    use keygate_server::tls::{resolve_files, TlsSource};
    let dir = temp_dir("sighup");
    let (a_cert, a_key) = resolve_files(&TlsSource::SelfSigned, &dir.join("a")).expect("cert a");
    let (b_cert, b_key) = resolve_files(&TlsSource::SelfSigned, &dir.join("b")).expect("cert b");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("read");
    let (a_cert_pem, a_key_pem, b_cert_pem, b_key_pem) =
        (read(&a_cert), read(&a_key), read(&b_cert), read(&b_key));
    let cert_len = a_cert_pem.len().max(b_cert_pem.len()) + 4;
    let key_len = a_key_pem.len().max(b_key_pem.len()) + 4;
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let then = std::time::SystemTime::now() - Duration::from_secs(60);
    write_unnoticed(&cert, &a_cert_pem, cert_len, then);
    write_unnoticed(&key, &a_key_pem, key_len, then);

    let port = crate::cli::free_port();
    let log = std::fs::File::create(dir.join("log")).expect("log");
    let child = bin()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--tls-cert",
            cert.to_str().expect("utf8"),
            "--tls-key",
            key.to_str().expect("utf8"),
        ])
        .args(["--data-dir", dir.join("data").to_str().expect("utf8")])
        .stderr(log)
        .spawn()
        .expect("spawn");
    let mut server = ServeProcess {
        child,
        base: format!("https://localhost:{port}"),
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while crate::tls::HttpsConn::connect(&a_cert, false, addr)
        .await
        .is_err()
    {
        assert!(started.elapsed() < Duration::from_secs(30), "no HTTPS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    write_unnoticed(&cert, &b_cert_pem, cert_len, then);
    write_unnoticed(&key, &b_key_pem, key_len, then);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        crate::tls::HttpsConn::connect(&b_cert, false, addr)
            .await
            .is_err(),
        "the watcher saw no change: the first certificate is still served"
    );
    signal(&server, "HUP");
    let started = Instant::now();
    while crate::tls::HttpsConn::connect(&b_cert, false, addr)
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "SIGHUP did not reload the certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "SIGHUP did not end the process"
    );
    signal(&server, "TERM");
    assert!(wait_exit(&mut server, Duration::from_secs(30)).success());
    let _ = std::fs::remove_dir_all(dir);
}

/// The request log goes to standard error, which in production is a pipe to a log collector.
/// A collector that stops reading for a while must not stop the requests: their lines wait in
/// memory (up to a cap) while the log thread waits on the pipe, and none is lost once it reads
/// again. Before the log thread did every write, the request whose line filled a batch wrote it
/// itself and hung on the full pipe, and the others after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_log_nobody_reads_stalls_no_request_and_loses_no_line() {
    use std::io::Read;
    let dir = temp_dir("logpipe");
    let data = dir.join("data");
    let port = crate::cli::free_port();
    let mut child = bin()
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", data.to_str().expect("utf8 path")])
        .args(["--log-format", "json"])
        .env("KEYGATE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn keygate serve");
    // Held, not read, until the requests are done: the pipe (64 KiB on Linux) fills.
    let mut stderr = child.stderr.take().expect("stderr");
    let server = ServeProcess {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let started = Instant::now();
    loop {
        match client.get(format!("{}/healthz", server.base)).send().await {
            Ok(r) if r.status() == 200 => break,
            _ => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few hundred bytes a line: well past the pipe and a batch, well under the cap.
    const REQUESTS: usize = 3000;
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, base, done) = (client.clone(), server.base.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while done.fetch_add(1, Ordering::Relaxed) < REQUESTS as u64 {
                // A path of its own (an unknown one: 404), so that its lines can be counted.
                let r = client
                    .get(format!("{base}/probe-log"))
                    .send()
                    .await
                    .expect("a request hung behind the unread log");
                assert_eq!(r.status(), 404);
            }
        }));
    }
    for t in tasks {
        t.await.expect("request task");
    }
    // Read now: every request's line comes out.
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 65536];
        let mut lines = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while lines < REQUESTS && Instant::now() < deadline {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    lines = String::from_utf8_lossy(&seen)
                        .matches("\"path\":\"/probe-log\"")
                        .count();
                }
            }
        }
        lines
    });
    let server_kept = server;
    let lines = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
        .await
        .expect("join");
    assert_eq!(lines, REQUESTS, "request lines lost");
    drop(server_kept);
    let _ = std::fs::remove_dir_all(dir);
}
