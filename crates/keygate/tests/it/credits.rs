//! Credits: the balance and ledger, operator grants, the monthly refill, per-call costs and
//! 402 when they run out; usage per key per day.

use reqwest::Method;
use serde_json::json;

use crate::harness::{with_plan, Backend, TestServer};
use crate::on_both_backends;

on_both_backends! {
    async fn an_account_starts_with_its_plans_monthly_credits(srv) {
        let acme = srv.account("Acme").await;
        let r = srv.get_ok("/api/v1/credits", &acme.key).await;
        assert_eq!(r["balance"], 1000);
        assert_eq!(r["total_credits_used"], 0);
        assert_eq!(r["plan"], "free");
        let reset = r["next_reset_date"].as_str().expect("date");
        let today = time::OffsetDateTime::now_utc().date();
        assert!(reset > today.to_string().as_str() && reset.ends_with("-01"), "{reset}");
        let ledger = srv.get_ok("/api/v1/credits/usage", &acme.key).await;
        assert_eq!(ledger.as_array().expect("array").len(), 1);
        assert_eq!(ledger[0]["kind"], "refill");
        assert_eq!(ledger[0]["amount"], 1000);
    }

    async fn operators_grant_credits_once_per_idempotency_key(srv) {
        let acme = srv.account("Acme").await;
        let op = srv.operator_key().await;
        let path = format!("/api/v1/accounts/{}/credits", acme.id);
        let body = json!({"amount": 250, "idempotency_key": "invoice-17", "description": "top-up"});
        let r = srv.send(Method::POST, &path, Some(&op), Some(body.clone())).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let again = srv.send(Method::POST, &path, Some(&op), Some(body)).await;
        assert_eq!(again.status, 200);
        assert_eq!(again.body["id"], r.body["id"]);
        assert_eq!(srv.get_ok("/api/v1/credits", &acme.key).await["balance"], 1250);
        let denied = srv.send(Method::POST, &path, Some(&acme.key), Some(json!({"amount": 5}))).await;
        assert_eq!(denied.status, 403, "only operators grant");
        let bad = srv.send(Method::POST, &path, Some(&op), Some(json!({"amount": 0}))).await;
        assert_eq!(bad.status, 400);
    }

    async fn usage_is_reported_per_key_per_day(srv) {
        let acme = srv.account("Acme").await;
        let (k, kid) = srv.create_key(&acme.key, json!({"name": "counted"})).await;
        for _ in 0..3 {
            srv.get_ok("/api/v1/auth/me", &k).await;
        }
        srv.state.usage.flush(srv.state.store.as_ref()).await.expect("flush");
        let rows = srv.get_ok("/api/v1/usage", &acme.key).await;
        let today = time::OffsetDateTime::now_utc().date().to_string();
        let row = rows.as_array().expect("array").iter().find(|r| r["key_id"] == kid.as_str()).expect("the key's row");
        assert_eq!(row["requests"], 3);
        assert_eq!(row["date"], today.as_str());
        assert_eq!(srv.get("/api/v1/usage?from=yesterday", &acme.key).await.status, 400);
    }
}

#[tokio::test]
async fn a_call_with_a_credit_cost_debits_it_and_answers_402_when_credits_run_out() {
    let srv = TestServer::start_with(Backend::Sqlite, |c| {
        with_plan(c, "metered", "1000/minute", Some(10));
        c.route_costs
            .push(("GET".into(), "/api/v1/auth/me".into(), 4));
    })
    .await
    .expect("sqlite");
    let acme = srv.account_on_plan("Acme", Some("metered")).await;
    assert_eq!(srv.get("/api/v1/auth/me", &acme.key).await.status, 200);
    assert_eq!(srv.get("/api/v1/auth/me", &acme.key).await.status, 200);
    let r = srv.get("/api/v1/auth/me", &acme.key).await;
    assert_eq!(r.status, 402);
    assert_eq!(r.error_code(), "insufficient_credits");
    assert_eq!(r.body["error"]["details"]["credits_needed"], 4);
    assert_eq!(r.body["error"]["details"]["credits_available"], 2);
    // Routes without a cost still work.
    assert_eq!(srv.get("/api/v1/credits", &acme.key).await.status, 200);
    let credits = srv.get_ok("/api/v1/credits", &acme.key).await;
    assert_eq!(
        (
            credits["balance"].as_i64(),
            credits["total_credits_used"].as_i64()
        ),
        (Some(2), Some(8))
    );
    // A retried call with the same Idempotency-Key is debited once.
    let op = srv.operator_key().await;
    srv.send(
        Method::POST,
        &format!("/api/v1/accounts/{}/credits", acme.id),
        Some(&op),
        Some(json!({"amount": 10})),
    )
    .await;
    for _ in 0..3 {
        let r = srv
            .client
            .get(format!("{}/api/v1/auth/me", srv.base))
            .bearer_auth(&acme.key)
            .header("idempotency-key", "retry-me")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
    }
    assert_eq!(srv.get_ok("/api/v1/credits", &acme.key).await["balance"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_paid_calls_never_overdraw_the_balance() {
    let srv = TestServer::start_with(Backend::Sqlite, |c| {
        with_plan(c, "metered", "100000/minute", Some(30));
        c.route_costs
            .push(("*".into(), "/api/v1/auth/me".into(), 3));
    })
    .await
    .expect("sqlite");
    let acme = srv.account_on_plan("Acme", Some("metered")).await;
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (client, url, key) = (
                srv.client.clone(),
                format!("{}/api/v1/auth/me", srv.base),
                acme.key.clone(),
            );
            tokio::spawn(async move {
                client
                    .get(url)
                    .bearer_auth(key)
                    .send()
                    .await
                    .expect("send")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            200 => ok += 1,
            402 => {}
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(ok, 10, "30 credits at 3 a call");
    assert_eq!(srv.get_ok("/api/v1/credits", &acme.key).await["balance"], 0);
}
