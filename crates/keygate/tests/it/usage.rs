//! Usage is counted in memory and written in batches: requests write nothing by themselves.

use keygate_core::{AccountId, KeyId};
use keygate_server::usage::day_of;

use crate::on_both_backends;

on_both_backends! {
    async fn requests_write_nothing_until_the_batch_is_flushed(srv) {
        let acme = srv.account("Acme").await;
        let me = srv.get_ok("/api/v1/auth/me", &acme.key).await;
        let key_id = KeyId::parse(me["key"]["id"].as_str().expect("id")).expect("key id");
        let account = AccountId::parse(&acme.id).expect("account id");
        for _ in 0..4 {
            srv.get_ok("/api/v1/auth/me", &acme.key).await;
        }
        let today = day_of(time::OffsetDateTime::now_utc());
        let key = srv.state.store.get_key(Some(&account), &key_id).await.expect("key");
        assert_eq!(key.last_used_at, None, "no write per request");
        assert!(srv.state.store.usage_by_day(&account, today - 1, today).await.expect("usage").is_empty());

        srv.state.usage.flush(srv.state.store.as_ref()).await.expect("flush");
        let key = srv.state.store.get_key(Some(&account), &key_id).await.expect("key");
        assert!(key.last_used_at.is_some());
        let rows = srv.state.store.usage_by_day(&account, today - 1, today).await.expect("usage");
        assert_eq!(rows.iter().map(|r| r.requests).sum::<u64>(), 5);
        let listed = srv.get_ok(&format!("/api/v1/auth/api-keys/{key_id}"), &acme.key).await;
        assert!(listed["last_used_at"].is_string());
    }

    async fn shutting_down_flushes_the_usage_counted_so_far(srv) {
        let acme = srv.account("Acme").await;
        let account = AccountId::parse(&acme.id).expect("account id");
        for _ in 0..3 {
            srv.get_ok("/api/v1/auth/me", &acme.key).await;
        }
        let store = srv.state.store.clone();
        srv.shutdown().await;
        let today = day_of(time::OffsetDateTime::now_utc());
        let rows = store.usage_by_day(&account, today - 1, today).await.expect("usage");
        assert_eq!(rows.iter().map(|r| r.requests).sum::<u64>(), 3);
    }
}
