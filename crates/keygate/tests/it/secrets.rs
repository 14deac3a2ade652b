//! Plaintext keys and passwords never reach the logs or the database.

use std::process::Stdio;

use reqwest::Method;
use serde_json::json;

use super::cli::{bin, serve};
use crate::harness::temp_dir;

fn files_below(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files_below(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn no_plaintext_key_or_password_appears_in_logs_or_database_files() {
    let dir = temp_dir("secrets");
    let data = dir.join("data");
    let data_s = data.to_str().expect("utf8");
    let log = dir.join("server.log");
    let server = serve(&["--data-dir", data_s, "--log-format", "json"], &log).await;
    let password = "pw-Tr0ub4dor-and-3";
    let out = bin()
        .args([
            "admin",
            "create-account",
            "--json",
            "--name",
            "Acme",
            "--email",
            "a@acme.test",
            "--password",
            password,
            "--data-dir",
            data_s,
        ])
        .stderr(Stdio::piped())
        .output()
        .expect("admin");
    assert!(out.status.success());
    let admin_stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let admin_key = created["api_key"].as_str().expect("key").to_owned();

    let client = reqwest::Client::new();
    let mut secrets = vec![admin_key.clone(), password.to_owned()];
    for i in 0..3 {
        let r: serde_json::Value = client
            .post(format!("{}/api/v1/auth/api-keys", server.base))
            .bearer_auth(&admin_key)
            .json(&json!({"name": format!("k{i}")}))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        let k = r["key"].as_str().expect("key").to_owned();
        // Used every way a client might, including where it does not belong.
        client
            .get(format!("{}/api/v1/auth/me", server.base))
            .header("x-api-key", &k)
            .send()
            .await
            .expect("send");
        client
            .get(format!("{}/api/v1/auth/me?api_key={k}", server.base))
            .send()
            .await
            .expect("send");
        client
            .request(
                Method::DELETE,
                format!(
                    "{}/api/v1/auth/api-keys/{}",
                    server.base,
                    r["id"].as_str().expect("id")
                ),
            )
            .bearer_auth(&k)
            .send()
            .await
            .expect("send");
        client
            .get(format!("{}/api/v1/auth/me", server.base))
            .bearer_auth(&k)
            .send()
            .await
            .expect("send");
        secrets.push(k);
    }
    // A mistyped key must not be echoed either.
    let last = if admin_key.ends_with('x') { 'y' } else { 'x' };
    let typo = format!("{}{last}", &admin_key[..admin_key.len() - 1]);
    let r = client
        .get(format!("{}/api/v1/auth/me", server.base))
        .bearer_auth(&typo)
        .send()
        .await
        .expect("send");
    assert!(!r.text().await.expect("body").contains(&typo));
    secrets.push(typo);
    drop(server);

    let mut haystacks = vec![
        ("server log".to_owned(), std::fs::read(&log).expect("log")),
        ("admin stderr".to_owned(), admin_stderr.into_bytes()),
    ];
    for f in files_below(&data) {
        haystacks.push((f.display().to_string(), std::fs::read(&f).expect("read")));
    }
    assert!(
        haystacks[0].1.len() > 1000,
        "the server logged at debug level"
    );
    for (name, bytes) in &haystacks {
        let text = String::from_utf8_lossy(bytes);
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "a secret appears in {name}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
