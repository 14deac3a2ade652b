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

    async fn a_paced_flush_of_more_keys_than_a_chunk_counts_each_once(srv) {
        use keygate_server::service::keys::{build_key, KeySpec};
        use keygate_server::usage::FLUSH_CHUNK;
        let acme = srv.account("Acme").await;
        let account = AccountId::parse(&acme.id).expect("account id");
        let n = FLUSH_CHUNK * 2 + 17;
        let mut records = Vec::new();
        for i in 0..n {
            let spec = KeySpec {
                name: format!("k{i}"),
                description: String::new(),
                scope: keygate_core::Scope::Read,
                environment: keygate_core::Environment::Live,
                expires_at: None,
                metadata: serde_json::json!({}),
                rate_limit: None,
                permissions: Vec::new(),
            };
            let (record, _) = build_key(&srv.state, Some(&account), None, spec).expect("key");
            records.push(record);
        }
        srv.state.store.create_keys(&records).await.expect("create keys");
        let now = time::OffsetDateTime::now_utc();
        // Each key as the key cache holds it.
        let cached: Vec<_> = records
            .iter()
            .map(|k| {
                std::sync::Arc::new(keygate_store::KeyWithAccount {
                    key: k.clone(),
                    account: None,
                })
            })
            .collect();
        for (i, k) in cached.iter().enumerate() {
            // Key i used i % 3 + 1 times.
            for _ in 0..(i % 3 + 1) {
                srv.state.usage.record(k.key.hash, k, now);
            }
        }
        let written = srv
            .state
            .usage
            .flush_paced(srv.state.store.as_ref(), std::time::Duration::from_millis(1))
            .await
            .expect("flush");
        assert_eq!(written, n, "one row per key");
        let today = day_of(now);
        let rows = srv.state.store.usage_by_day(&account, today, today).await.expect("usage");
        assert_eq!(rows.len(), n);
        let expected: u64 = (0..n).map(|i| (i % 3 + 1) as u64).sum();
        assert_eq!(rows.iter().map(|r| r.requests).sum::<u64>(), expected);
        // Nothing is left to write.
        assert_eq!(srv.state.usage.flush(srv.state.store.as_ref()).await.expect("flush"), 0);

        // The next period counts into the maps (and sorts into the vector) the first flush
        // emptied and kept: every count arrives once more, nothing left from before.
        for (i, k) in cached.iter().enumerate() {
            for _ in 0..(i % 3 + 1) {
                srv.state.usage.record(k.key.hash, k, now);
            }
        }
        let written = srv
            .state
            .usage
            .flush_paced(srv.state.store.as_ref(), std::time::Duration::from_millis(1))
            .await
            .expect("flush");
        assert_eq!(written, n, "one row per key again");
        let rows = srv.state.store.usage_by_day(&account, today, today).await.expect("usage");
        assert_eq!(rows.len(), n);
        assert_eq!(rows.iter().map(|r| r.requests).sum::<u64>(), 2 * expected);
        assert_eq!(srv.state.usage.flush(srv.state.store.as_ref()).await.expect("flush"), 0);
    }

    async fn a_flush_the_database_refuses_loses_no_count(srv) {
        use keygate_store_sql::testing::execute;
        let acme = srv.account("Acme").await;
        let account = AccountId::parse(&acme.id).expect("account id");
        let me = srv.get_ok("/api/v1/auth/me", &acme.key).await;
        for _ in 0..2 {
            srv.get_ok("/api/v1/auth/me", &acme.key).await;
        }
        let key_id = me["key"]["id"].as_str().expect("id").to_owned();
        // The table the counts go to is gone for a while: the flush fails and keeps them.
        execute(&srv.database_url, "ALTER TABLE usage_daily RENAME TO usage_daily_away").await;
        let failed = srv.state.usage.flush(srv.state.store.as_ref()).await;
        assert!(failed.is_err(), "the flush cannot write");
        execute(&srv.database_url, "ALTER TABLE usage_daily_away RENAME TO usage_daily").await;
        // Counted meanwhile, into the map the failed flush swapped in.
        srv.get_ok("/api/v1/auth/me", &acme.key).await;

        assert_eq!(srv.state.usage.flush(srv.state.store.as_ref()).await.expect("flush"), 1);
        let today = day_of(time::OffsetDateTime::now_utc());
        let rows = srv.state.store.usage_by_day(&account, today - 1, today).await.expect("usage");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key_id.as_str(), key_id);
        assert_eq!(rows[0].requests, 4, "each request counted once, none lost");
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
