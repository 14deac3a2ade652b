//! The audit log: every security-relevant act is recorded with its actor, account, client
//! address, time, request id and object, never with a secret; account admins read their own
//! account's entries, operators everyone's.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;
use crate::on_both_backends;

/// The account's entries as its admin sees them, newest first.
async fn entries(srv: &TestServer, key: &str, query: &str) -> Vec<Value> {
    let body = srv.get_ok(&format!("/api/v1/audit-log{query}"), key).await;
    body.as_array().expect("a list").clone()
}

fn actions(list: &[Value]) -> Vec<&str> {
    list.iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect()
}

/// The one entry with this action, failing when there is none or several.
fn only<'a>(list: &'a [Value], action: &str) -> &'a Value {
    let found: Vec<&Value> = list.iter().filter(|e| e["action"] == action).collect();
    assert_eq!(found.len(), 1, "one {action} in {:?}", actions(list));
    found[0]
}

on_both_backends! {
    async fn every_security_relevant_act_is_recorded_with_who_where_and_which_request(srv) {
        let acme = srv.account("Acme").await;
        let op = srv.operator_key().await;
        let admin_key_id = srv.get_ok("/api/v1/auth/me", &acme.key).await["key"]["id"]
            .as_str().expect("key id").to_owned();

        // Keys: created, scope changed, other fields changed, rolled, revoked.
        let r = srv.send(Method::POST, "/api/v1/auth/api-keys", Some(&acme.key),
            Some(json!({"name": "Production API Key", "scope": "write"}))).await;
        assert_eq!(r.status, 201);
        let create_request_id = r.header("x-request-id").expect("request id").to_owned();
        let (new_key, key_id) = (r.body["key"].as_str().expect("key").to_owned(), r.body["id"].as_str().expect("id").to_owned());
        let key_path = format!("/api/v1/auth/api-keys/{key_id}");
        let r = srv.send(Method::PATCH, &key_path, Some(&acme.key), Some(json!({"scope": "read"}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(srv.send(Method::PATCH, &key_path, Some(&acme.key), Some(json!({"name": "Renamed", "rate_limit": "1/second"}))).await.status, 200);
        let r = srv.send(Method::POST, &format!("{key_path}/roll"), Some(&acme.key), Some(json!({"grace_seconds": 0}))).await;
        assert_eq!(r.status, 201);
        let rolled_key = r.body["key"].as_str().expect("key").to_owned();
        let rolled_id = r.body["id"].as_str().expect("id").to_owned();
        assert_eq!(srv.send(Method::DELETE, &format!("/api/v1/auth/api-keys/{rolled_id}"), Some(&acme.key), None).await.status, 200);

        // Users: created, role changed, password changed, deleted.
        let users = format!("/api/v1/accounts/{}/users", acme.id);
        let r = srv.send(Method::POST, &users, Some(&acme.key), Some(json!({
            "email": "jane@acme.test", "username": "jane", "password": "correct horse battery"}))).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let jane = r.body["id"].as_str().expect("id").to_owned();
        let jane_path = format!("{users}/{jane}");
        assert_eq!(srv.send(Method::PATCH, &jane_path, Some(&acme.key), Some(json!({"role": "admin"}))).await.status, 200);
        assert_eq!(srv.send(Method::PATCH, &jane_path, Some(&acme.key), Some(json!({"password": "tr0ub4dor&3 again"}))).await.status, 200);

        // Logins: one that fails, one that succeeds (and its token logged out).
        let wrong = keygate_server::service::passwords::crossbar_md5("jane", "not the password");
        let r = srv.v2(Method::PUT, "/v2/user_auth", None, Some(json!({"data": {"credentials": wrong, "account_name": "Acme"}}))).await;
        assert_eq!(r.status, 401);
        let right = keygate_server::service::passwords::crossbar_md5("jane", "tr0ub4dor&3 again");
        let r = srv.v2(Method::PUT, "/v2/user_auth", None, Some(json!({"data": {"credentials": right, "account_name": "Acme"}}))).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let token = r.body["auth_token"].as_str().expect("token").to_owned();
        assert_eq!(srv.v2(Method::DELETE, "/v2/token_auth", Some(&token), None).await.status, 200);
        assert_eq!(srv.send(Method::DELETE, &jane_path, Some(&acme.key), None).await.status, 200);

        // An operator changes the plan and grants credits.
        let account_path = format!("/api/v1/accounts/{}", acme.id);
        assert_eq!(srv.send(Method::PATCH, &account_path, Some(&op), Some(json!({"plan": "pro"}))).await.status, 200);
        let r = srv.send(Method::POST, &format!("{account_path}/credits"), Some(&op),
            Some(json!({"amount": 500, "idempotency_key": "invoice-1", "description": "top-up"}))).await;
        assert_eq!(r.status, 201, "{}", r.body);

        let log = entries(&srv, &acme.key, "?limit=100").await;
        for action in ["account.created", "key.created", "key.scope_changed", "key.updated", "key.rolled", "key.revoked",
            "user.created", "user.role_changed", "user.password_changed", "login.failed", "login.succeeded",
            "token.revoked", "user.deleted", "account.plan_changed", "credits.granted"] {
            only(&log, action);
        }
        let times: Vec<time::OffsetDateTime> = log
            .iter()
            .map(|e| time::OffsetDateTime::parse(e["at"].as_str().expect("at"), &time::format_description::well_known::Rfc3339).expect("RFC 3339"))
            .collect();
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(times, sorted, "newest first");

        let created = only(&log, "key.created");
        assert_eq!(created["account_id"], acme.id.as_str());
        assert_eq!(created["actor"]["key_id"], admin_key_id.as_str());
        assert_eq!(created["actor"]["user_id"], acme.user_id.as_str());
        assert_eq!(created["object"], json!({"type": "api_key", "id": key_id}));
        assert_eq!(created["client_addr"], "127.0.0.1");
        assert_eq!(created["request_id"], create_request_id.as_str());
        assert_eq!(created["details"]["scope"], "write");
        assert_eq!(only(&log, "key.scope_changed")["details"], json!({"from": "write", "to": "read"}));
        assert_eq!(only(&log, "key.updated")["details"]["fields"], json!(["name", "rate_limit"]));
        assert_eq!(only(&log, "key.rolled")["details"]["new_key_id"], rolled_id.as_str());
        assert_eq!(only(&log, "user.role_changed")["details"], json!({"from": "member", "to": "admin"}));
        let login = only(&log, "login.succeeded");
        assert_eq!(login["actor"]["user_id"], jane.as_str());
        assert_eq!(login["object"]["id"], jane.as_str());
        assert_eq!(only(&log, "login.failed")["details"]["reason"], "wrong credentials");
        let plan = only(&log, "account.plan_changed");
        assert_eq!(plan["details"], json!({"from": "free", "to": "pro"}));
        assert!(plan["actor"]["key_id"].is_string(), "the operator's key");
        assert_eq!(plan["actor"]["user_id"], Value::Null);
        assert_eq!(only(&log, "credits.granted")["details"]["amount"], 500);
        for e in &log {
            if e["action"] != "account.created" {
                assert!(e["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{e}");
                assert_eq!(e["client_addr"], "127.0.0.1", "{e}");
            }
        }

        // Nothing secret anywhere in the log, as the operator sees all of it.
        let everything = srv.get_ok("/api/v1/audit-log?limit=100", &op).await.to_string();
        for secret in [acme.key.as_str(), &new_key, &rolled_key, &op, &token, "correct horse battery",
            "tr0ub4dor&3 again", &right, &wrong] {
            assert!(!everything.contains(secret), "the audit log holds a secret");
        }
        // The key's displayable start is there, which is how a person recognises it.
        assert!(everything.contains(&new_key[..12]));
    }

    async fn webhook_endpoint_changes_are_recorded_without_secret_or_path(srv) {
        let acme = srv.account("Acme").await;
        let r = srv.send(Method::POST, "/api/v1/webhooks", Some(&acme.key), Some(json!({
            "url": "https://hooks.example.com/keygate?token=receiver-secret", "events": ["key.*"]}))).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.body["id"].as_str().expect("id").to_owned();
        let first_secret = r.body["secret"].as_str().expect("secret").to_owned();
        let path = format!("/api/v1/webhooks/{id}");
        assert_eq!(srv.send(Method::PATCH, &path, Some(&acme.key), Some(json!({"events": ["post.created"]}))).await.status, 200);
        assert_eq!(srv.send(Method::POST, &format!("{path}/disable"), Some(&acme.key), None).await.status, 200);
        let r = srv.send(Method::POST, &format!("{path}/rotate-secret"), Some(&acme.key), Some(json!({}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let second_secret = r.body["secret"].as_str().expect("secret").to_owned();
        assert_eq!(srv.send(Method::DELETE, &path, Some(&acme.key), None).await.status, 204);

        let log = entries(&srv, &acme.key, "?action=webhook.").await;
        assert_eq!(actions(&log), ["webhook.endpoint.deleted", "webhook.endpoint.secret_rotated",
            "webhook.endpoint.updated", "webhook.endpoint.updated", "webhook.endpoint.created"]);
        assert!(log.iter().all(|e| e["object"]["id"] == id.as_str()));
        let created = only(&log, "webhook.endpoint.created");
        assert_eq!(created["details"]["host"], "https://hooks.example.com");
        assert_eq!(log[2]["details"]["enabled"], false, "disabling is recorded");
        let text = serde_json::to_string(&log).expect("json");
        for secret in [first_secret.as_str(), second_secret.as_str(), "receiver-secret"] {
            assert!(!text.contains(secret), "the audit log holds a secret");
        }
    }

    async fn account_admins_read_their_own_account_and_operators_read_all(srv) {
        let acme = srv.account("Acme").await;
        let globex = srv.account("Globex").await;
        let op = srv.operator_key().await;
        srv.create_key(&acme.key, json!({"name": "acme key"})).await;
        srv.create_key(&globex.key, json!({"name": "globex key"})).await;

        let mine = entries(&srv, &acme.key, "").await;
        assert!(!mine.is_empty());
        assert!(mine.iter().all(|e| e["account_id"] == acme.id.as_str()));
        let r = srv.get(&format!("/api/v1/audit-log?account={}", globex.id), &acme.key).await;
        assert_eq!(r.status, 404, "another account's log does not exist for them");
        let (writer, _) = srv.create_key(&acme.key, json!({"name": "writer", "scope": "write"})).await;
        assert_eq!(srv.get("/api/v1/audit-log", &writer).await.status, 403, "admins only");
        assert_eq!(srv.get("/api/v1/audit-log", "").await.status, 401);

        let all = entries(&srv, &op, "?limit=100").await;
        assert!(all.iter().any(|e| e["account_id"] == acme.id.as_str()));
        assert!(all.iter().any(|e| e["account_id"] == globex.id.as_str()));
        let theirs = entries(&srv, &op, &format!("?account={}", globex.id)).await;
        assert!(!theirs.is_empty());
        assert!(theirs.iter().all(|e| e["account_id"] == globex.id.as_str()));
    }

    async fn the_log_filters_by_action_actor_object_and_time_and_pages(srv) {
        let acme = srv.account("Acme").await;
        let (_, first) = srv.create_key(&acme.key, json!({"name": "one"})).await;
        let (second_key, second) = srv.create_key(&acme.key, json!({"name": "two"})).await;
        srv.create_key(&second_key, json!({"name": "three"})).await;
        assert_eq!(srv.send(Method::DELETE, &format!("/api/v1/auth/api-keys/{first}"), Some(&acme.key), None).await.status, 200);

        assert_eq!(actions(&entries(&srv, &acme.key, "?action=key.revoked").await), ["key.revoked"]);
        assert_eq!(entries(&srv, &acme.key, "?action=key.").await.len(), 4, "three created, one revoked");
        let by_second = entries(&srv, &acme.key, &format!("?actor={second}")).await;
        assert_eq!(actions(&by_second), ["key.created"], "what the second key did");
        let on_first = entries(&srv, &acme.key, &format!("?object={first}")).await;
        assert_eq!(actions(&on_first), ["key.revoked", "key.created"]);
        assert!(entries(&srv, &acme.key, "?until=2001-01-01T00:00:00Z").await.is_empty());
        assert_eq!(entries(&srv, &acme.key, "?since=2001-01-01T00:00:00Z&action=key.created").await.len(), 3);
        let r = srv.get("/api/v1/audit-log?since=yesterday", &acme.key).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.body["error"]["details"]["field"], "since");

        let r = srv.get("/api/v1/audit-log?action=key.&limit=3", &acme.key).await;
        assert_eq!(r.header("x-total-count"), Some("4"));
        let link = r.header("link").expect("next page").to_owned();
        let next = link.trim_start_matches('<').split('>').next().expect("url");
        assert!(next.contains("action=key."), "{next}");
        let rest = srv.get_ok(next, &acme.key).await;
        assert_eq!(rest.as_array().expect("list").len(), 1);
    }

    async fn entries_past_the_retention_period_are_purged(srv) {
        // This node keeps entries for ever; the second one, started below, keeps them 30 days.
        let backend = srv.backend;
        srv.shutdown().await;
        let srv = TestServer::start_with(backend, |c| c.audit_retention_days = 0).await.expect("server");
        let acme = srv.account("Acme").await;
        let old = keygate_store::AuditEntry {
            id: "aud_00000000000000000000000000000001".into(),
            at: time::OffsetDateTime::now_utc() - time::Duration::days(400),
            action: "key.created".into(),
            account_id: keygate_core::AccountId::parse(&acme.id),
            actor_key_id: None,
            actor_user_id: None,
            object_type: "api_key".into(),
            object_id: None,
            client_addr: None,
            request_id: None,
            details: json!({}),
        };
        srv.state.store.record_audit(&old).await.expect("record");
        assert!(srv.get_ok("/api/v1/audit-log?limit=100", &acme.key).await.to_string().contains(&old.id));
        // Every node purges at start (and hourly): a second one on the same database does.
        let node = srv.another_node_with(|c| c.audit_retention_days = 30).await;
        let started = std::time::Instant::now();
        loop {
            let left = entries(&node, &acme.key, "?limit=100").await;
            if left.iter().all(|e| e["id"] != old.id.as_str()) {
                assert!(!left.is_empty(), "recent entries stay");
                break;
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(10), "not purged");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        node.shutdown().await;
    }
}
