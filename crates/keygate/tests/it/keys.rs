//! Seed 002's key management and the rest of the key lifecycle.

use reqwest::Method;
use serde_json::json;

use crate::on_both_backends;

on_both_backends! {
    async fn a_created_key_is_shown_once_and_then_only_by_its_start(srv) {
        let acme = srv.account("Acme").await;
        let r = srv
            .send(Method::POST, "/api/v1/auth/api-keys", Some(&acme.key),
                Some(json!({"name": "Production API Key", "description": "Key for production environment"})))
            .await;
        assert_eq!(r.status, 201);
        let key = r.body["key"].as_str().expect("the key is in the answer");
        let id = r.body["id"].as_str().expect("and its id");
        assert!(key.starts_with("ak_live_"), "{key}");
        assert_eq!(r.body["name"], "Production API Key");
        assert_eq!(r.body["description"], "Key for production environment");
        assert_eq!(r.body["status"], "active");

        let shown = srv.get_ok(&format!("/api/v1/auth/api-keys/{id}"), &acme.key).await;
        assert!(shown.get("key").is_none(), "the plaintext is never shown again: {shown}");
        assert_eq!(shown["start"], &key[..12]);
        assert_eq!(shown["last4"], &key[key.len() - 4..]);
        // The new key works.
        assert_eq!(srv.get("/api/v1/auth/me", key).await.status, 200);
    }

    async fn listing_with_a_status_filter_returns_a_json_array_of_those_keys(srv) {
        let acme = srv.account("Acme").await;
        let (_, keep) = srv.create_key(&acme.key, json!({"name": "keep"})).await;
        let (_, gone) = srv.create_key(&acme.key, json!({"name": "gone"})).await;
        let r = srv.send(Method::DELETE, &format!("/api/v1/auth/api-keys/{gone}"), Some(&acme.key), None).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["status"], "revoked");

        let active = srv.get_ok("/api/v1/auth/api-keys?status=active", &acme.key).await;
        let ids: Vec<&str> = active.as_array().expect("array").iter().map(|k| k["id"].as_str().expect("id")).collect();
        assert!(ids.contains(&keep.as_str()));
        assert!(!ids.contains(&gone.as_str()));
        for k in active.as_array().expect("array") {
            assert_eq!(k["status"], "active");
            assert!(k["name"].is_string());
        }
        let revoked = srv.get_ok("/api/v1/auth/api-keys?status=revoked", &acme.key).await;
        assert_eq!(revoked.as_array().expect("array").len(), 1);
        assert_eq!(revoked[0]["id"], gone.as_str());
        let all = srv.get("/api/v1/auth/api-keys", &acme.key).await;
        assert_eq!(all.header("x-total-count"), Some("3"));
        let bad = srv.get("/api/v1/auth/api-keys?status=sleeping", &acme.key).await;
        assert_eq!(bad.status, 400);
        assert_eq!(bad.body["error"]["details"]["field"], "status");
    }

    async fn a_revoked_key_is_rejected_on_the_very_next_request(srv) {
        let acme = srv.account("Acme").await;
        let (victim, id) = srv.create_key(&acme.key, json!({"name": "short-lived"})).await;
        // Warm the cache with the key, so the revocation has to invalidate it.
        for _ in 0..3 {
            assert_eq!(srv.get("/api/v1/auth/me", &victim).await.status, 200);
        }
        let r = srv.send(Method::DELETE, &format!("/api/v1/auth/api-keys/{id}"), Some(&acme.key), None).await;
        assert_eq!(r.status, 200);
        let after = srv.get("/api/v1/auth/me", &victim).await;
        assert_eq!(after.status, 401);
        assert_eq!(after.error_code(), "unauthorized");
        assert!(after.body["error"]["message"].is_string());
    }

    async fn a_key_can_revoke_itself_and_is_refused_afterwards(srv) {
        let acme = srv.account("Acme").await;
        let (k, id) = srv.create_key(&acme.key, json!({"name": "self"})).await;
        let r = srv.send(Method::DELETE, &format!("/api/v1/auth/api-keys/{id}"), Some(&k), None).await;
        assert_eq!(r.status, 200);
        assert_eq!(srv.get("/api/v1/auth/me", &k).await.status, 401);
    }

    async fn a_read_key_cannot_create_keys(srv) {
        let acme = srv.account("Acme").await;
        let (reader, _) = srv.create_key(&acme.key, json!({"name": "ro", "scope": "read"})).await;
        assert_eq!(srv.get("/api/v1/auth/api-keys", &reader).await.status, 200);
        let r = srv.send(Method::POST, "/api/v1/auth/api-keys", Some(&reader), Some(json!({"name": "x"}))).await;
        assert_eq!(r.status, 403);
        assert_eq!(r.error_code(), "forbidden");
    }

    async fn nobody_can_mint_or_raise_a_key_above_their_own_scope(srv) {
        let acme = srv.account("Acme").await;
        let (writer, writer_id) = srv.create_key(&acme.key, json!({"name": "rw", "scope": "write"})).await;
        let r = srv.send(Method::POST, "/api/v1/auth/api-keys", Some(&writer),
            Some(json!({"name": "escalate", "scope": "admin"}))).await;
        assert_eq!(r.status, 403);
        let r = srv.send(Method::PATCH, &format!("/api/v1/auth/api-keys/{writer_id}"), Some(&writer),
            Some(json!({"scope": "admin"}))).await;
        assert_eq!(r.status, 403);
        // A write key may mint read and write keys; by default a new key gets its creator's scope.
        let r = srv.send(Method::POST, "/api/v1/auth/api-keys", Some(&writer), Some(json!({"name": "child"}))).await;
        assert_eq!(r.status, 201);
        assert_eq!(r.body["scope"], "write");
        // And cannot touch the admin key.
        let admin_id = srv.get_ok("/api/v1/auth/me", &acme.key).await["key"]["id"].as_str().expect("id").to_owned();
        let r = srv.send(Method::DELETE, &format!("/api/v1/auth/api-keys/{admin_id}"), Some(&writer), None).await;
        assert_eq!(r.status, 403);
    }

    async fn an_expired_key_is_refused_and_listed_as_expired(srv) {
        let acme = srv.account("Acme").await;
        let soon = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
        let at = soon.format(&time::format_description::well_known::Rfc3339).expect("rfc3339");
        let (k, id) = srv.create_key(&acme.key, json!({"name": "brief", "expires_at": at})).await;
        assert_eq!(srv.get("/api/v1/auth/me", &k).await.status, 200);
        tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
        let r = srv.get("/api/v1/auth/me", &k).await;
        assert_eq!(r.status, 401);
        let expired = srv.get_ok("/api/v1/auth/api-keys?status=expired", &acme.key).await;
        assert_eq!(expired[0]["id"], id.as_str());
        let past = srv.send(Method::POST, "/api/v1/auth/api-keys", Some(&acme.key),
            Some(json!({"name": "past", "expires_at": "2001-01-01T00:00:00Z"}))).await;
        assert_eq!(past.status, 400);
        assert_eq!(past.body["error"]["details"]["field"], "expires_at");
    }

    async fn rolling_with_a_grace_period_keeps_the_old_key_working_until_it_ends(srv) {
        let acme = srv.account("Acme").await;
        let (old, id) = srv.create_key(&acme.key, json!({"name": "rolled", "metadata": {"team": "a"}})).await;
        let r = srv.send(Method::POST, &format!("/api/v1/auth/api-keys/{id}/roll"), Some(&acme.key),
            Some(json!({"grace_seconds": 2}))).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let new = r.body["key"].as_str().expect("new key").to_owned();
        assert_ne!(new, old);
        assert_eq!(r.body["name"], "rolled");
        assert_eq!(r.body["metadata"]["team"], "a");
        assert_eq!(srv.get("/api/v1/auth/me", &old).await.status, 200, "old key works during the grace period");
        assert_eq!(srv.get("/api/v1/auth/me", &new).await.status, 200);
        let old_info = srv.get_ok(&format!("/api/v1/auth/api-keys/{id}"), &acme.key).await;
        assert_eq!(old_info["rolled_to"], r.body["id"]);
        tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
        assert_eq!(srv.get("/api/v1/auth/me", &old).await.status, 401, "old key stops after the grace period");
        assert_eq!(srv.get("/api/v1/auth/me", &new).await.status, 200);
    }

    async fn rolling_with_zero_grace_stops_the_old_key_at_once(srv) {
        let acme = srv.account("Acme").await;
        let (old, id) = srv.create_key(&acme.key, json!({"name": "now"})).await;
        assert_eq!(srv.get("/api/v1/auth/me", &old).await.status, 200);
        let r = srv.send(Method::POST, &format!("/api/v1/auth/api-keys/{id}/roll"), Some(&acme.key),
            Some(json!({"grace_seconds": 0}))).await;
        assert_eq!(r.status, 201);
        assert_eq!(srv.get("/api/v1/auth/me", &old).await.status, 401);
        let again = srv.send(Method::POST, &format!("/api/v1/auth/api-keys/{id}/roll"), Some(&acme.key), None).await;
        assert_eq!(again.status, 409, "a revoked key cannot be rolled again");
    }

    async fn patching_a_key_changes_its_fields_and_takes_effect_at_once(srv) {
        let acme = srv.account("Acme").await;
        let (k, id) = srv.create_key(&acme.key, json!({"name": "before", "scope": "write"})).await;
        assert_eq!(srv.get("/api/v1/auth/me", &k).await.body["key"]["scope"], "write");
        let r = srv.send(Method::PATCH, &format!("/api/v1/auth/api-keys/{id}"), Some(&acme.key),
            Some(json!({"name": "after", "description": "d", "scope": "read", "metadata": {"a": 1}}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["name"], "after");
        assert_eq!(r.body["metadata"]["a"], 1);
        // The cached key is invalidated: the narrower scope applies on the next request.
        let denied = srv.send(Method::POST, "/api/v1/auth/api-keys", Some(&k), Some(json!({"name": "x"}))).await;
        assert_eq!(denied.status, 403);
    }

    async fn test_environment_keys_and_descriptions_are_kept(srv) {
        let acme = srv.account("Acme").await;
        let r = srv.send(Method::POST, "/api/v1/auth/api-keys", Some(&acme.key),
            Some(json!({"name": "dev", "environment": "test", "description": "for CI"}))).await;
        assert_eq!(r.status, 201);
        assert!(r.body["key"].as_str().expect("key").starts_with("ak_test_"));
        assert_eq!(r.body["environment"], "test");
    }

    async fn another_accounts_keys_are_not_found(srv) {
        let acme = srv.account("Acme").await;
        let globex = srv.account("Globex").await;
        let (_, gid) = srv.create_key(&globex.key, json!({"name": "theirs"})).await;
        for (method, path) in [
            (Method::GET, format!("/api/v1/auth/api-keys/{gid}")),
            (Method::DELETE, format!("/api/v1/auth/api-keys/{gid}")),
            (Method::PATCH, format!("/api/v1/auth/api-keys/{gid}")),
            (Method::POST, format!("/api/v1/auth/api-keys/{gid}/roll")),
        ] {
            let r = srv.send(method.clone(), &path, Some(&acme.key), Some(json!({}))).await;
            assert_eq!(r.status, 404, "{method} {path}");
        }
        let mine = srv.get_ok("/api/v1/auth/api-keys", &acme.key).await;
        assert!(mine.as_array().expect("array").iter().all(|k| k["id"] != gid.as_str()));
    }

    async fn lists_page_with_limit_cursor_link_and_total(srv) {
        let acme = srv.account("Acme").await;
        for i in 0..4 {
            srv.create_key(&acme.key, json!({"name": format!("k{i}")})).await;
        }
        let mut seen = Vec::new();
        let mut next = Some("/api/v1/auth/api-keys?limit=2".to_owned());
        while let Some(path) = next.take() {
            let r = srv.get(&path, &acme.key).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-total-count"), Some("5"));
            for k in r.body.as_array().expect("array") {
                seen.push(k["id"].as_str().expect("id").to_owned());
            }
            next = r.header("link").map(|l| {
                assert!(l.ends_with("rel=\"next\""), "{l}");
                l[1..l.find('>').expect("link target")].to_owned()
            });
        }
        assert_eq!(seen.len(), 5);
        let mut sorted = seen.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), 5, "no key twice");
        assert_eq!(srv.get("/api/v1/auth/api-keys?limit=101", &acme.key).await.status, 400);
        assert_eq!(srv.get("/api/v1/auth/api-keys?limit=0", &acme.key).await.status, 400);
    }
}

#[tokio::test]
async fn the_configured_prefix_is_used_for_new_keys() {
    let srv = crate::harness::TestServer::start_with(crate::harness::Backend::Sqlite, |c| {
        c.key_prefix = "ap".into()
    })
    .await
    .expect("sqlite");
    let acme = srv.account("Acme").await;
    assert!(acme.key.starts_with("ap_live_"), "{}", acme.key);
    let (k, _) = srv.create_key(&acme.key, json!({"name": "x"})).await;
    assert!(k.starts_with("ap_live_"));
}

#[tokio::test]
async fn a_key_with_a_broken_checksum_is_refused_as_invalid() {
    let srv = crate::harness::TestServer::start(crate::harness::Backend::Sqlite)
        .await
        .expect("sqlite");
    let acme = srv.account("Acme").await;
    let mut tampered = acme.key.clone().into_bytes();
    let i = 12;
    tampered[i] = if tampered[i] == b'x' { b'y' } else { b'x' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let r = srv.get("/api/v1/auth/me", &tampered).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["message"], "Invalid API key provided");
}
