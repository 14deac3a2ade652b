//! The webhook outbox's rules. Claims see every account's due deliveries, so each check deletes
//! its endpoints when it is done (their deliveries go with them) and leaves nothing due.

use keygate_core::{AccountId, DeliveryId, EndpointId, EventId};
use time::{Duration, OffsetDateTime};

use super::{both, create_fixture, new_key, not_found, now, ok, page};
use crate::{
    DeliveryAttempt, DeliveryStatus, EventTarget, NextStep, Store, WebhookEndpoint, WebhookEvent,
};

pub async fn run_all(store: &dyn Store) {
    endpoints_are_read_updated_and_deleted_within_their_account_only(store).await;
    an_event_gets_one_delivery_per_enabled_endpoint_that_takes_its_type(store).await;
    an_event_no_endpoint_takes_writes_nothing(store).await;
    a_test_event_goes_to_its_one_endpoint_of_the_account(store).await;
    a_due_delivery_is_leased_to_one_worker_until_the_lease_passes(store).await;
    concurrent_claims_never_hand_out_a_delivery_twice(store).await;
    only_the_lease_holder_records_an_attempt(store).await;
    failures_mark_the_endpoint_failing_until_a_success(store).await;
    an_attempt_can_disable_its_endpoint_with_it(store).await;
    released_leases_are_due_at_once(store).await;
    disabling_an_endpoint_gives_up_its_pending_deliveries(store).await;
    a_replay_is_a_new_delivery_of_the_same_event(store).await;
    deliveries_are_listed_newest_first_in_pages_with_their_attempts(store).await;
    a_notice_is_claimed_once(store).await;
    keys_expiring_in_a_window_are_found_soonest_first(store).await;
    purging_keeps_events_with_pending_deliveries(store).await;
}

fn endpoint(account: &AccountId, filters: &[&str]) -> WebhookEndpoint {
    let t = now();
    WebhookEndpoint {
        id: EndpointId::generate(),
        account_id: account.clone(),
        url: "https://hooks.example.com/keygate".into(),
        description: "conformance".into(),
        event_types: filters.iter().map(|f| f.to_string()).collect(),
        sealed_secret: "sealed-secret".into(),
        previous_secret: None,
        enabled: true,
        disabled_reason: None,
        failing_since: None,
        created_at: t,
        updated_at: t,
    }
}

fn event(account: &AccountId, event_type: &str, at: OffsetDateTime) -> WebhookEvent {
    WebhookEvent {
        id: EventId::generate(),
        account_id: account.clone(),
        event_type: event_type.into(),
        payload: format!(r#"{{"type":"{event_type}","data":{{}}}}"#),
        created_at: at,
    }
}

fn attempt(delivery: &DeliveryId, at: OffsetDateTime, status: Option<u16>) -> DeliveryAttempt {
    DeliveryAttempt {
        delivery_id: delivery.clone(),
        attempted_at: at,
        status_code: status,
        latency_ms: 12,
        error: status.is_none().then(|| "connection refused".to_owned()),
        response_excerpt: "ok".into(),
    }
}

async fn new_endpoint(store: &dyn Store, account: &AccountId, filters: &[&str]) -> WebhookEndpoint {
    let e = endpoint(account, filters);
    ok(store.create_endpoint(&e).await, "create_endpoint");
    e
}

async fn delete_all(store: &dyn Store, endpoints: &[&WebhookEndpoint]) {
    for e in endpoints {
        ok(
            store.delete_endpoint(&e.account_id, &e.id).await,
            "delete_endpoint",
        );
    }
}

fn lease(t: OffsetDateTime) -> OffsetDateTime {
    t + Duration::seconds(30)
}

pub async fn endpoints_are_read_updated_and_deleted_within_their_account_only(store: &dyn Store) {
    let a = create_fixture(store, "wh-a").await;
    let b = create_fixture(store, "wh-b").await;
    let mut e = new_endpoint(store, &a.account.id, &["post.created", "key.*"]).await;
    assert_eq!(
        ok(store.get_endpoint(Some(&a.account.id), &e.id).await, "get"),
        e
    );
    assert_eq!(ok(store.get_endpoint(None, &e.id).await, "get any"), e);
    not_found(
        store.get_endpoint(Some(&b.account.id), &e.id).await,
        "another account's endpoint",
    );

    e.url = "https://other.example.com/hook".into();
    e.description = "changed".into();
    e.event_types = vec!["*".into()];
    e.sealed_secret = "new-sealed".into();
    e.previous_secret = Some(("old-sealed".into(), now()));
    e.enabled = false;
    e.disabled_reason = Some("410 Gone".into());
    e.failing_since = Some(now());
    e.updated_at = now();
    ok(store.update_endpoint(&e).await, "update");
    assert_eq!(ok(store.get_endpoint(None, &e.id).await, "get"), e);

    let second = new_endpoint(store, &a.account.id, &[]).await;
    let first_page = ok(
        store.list_endpoints(&a.account.id, &page(None, 1)).await,
        "list",
    );
    assert_eq!(first_page.total, 2);
    assert!(first_page.has_more);
    assert_eq!(first_page.items, vec![e.clone()]);
    let next = ok(
        store
            .list_endpoints(&a.account.id, &page(Some(e.id.as_str()), 5))
            .await,
        "list",
    );
    assert_eq!(next.items, vec![second.clone()]);
    assert_eq!(
        ok(
            store.list_endpoints(&b.account.id, &page(None, 5)).await,
            "list"
        )
        .total,
        0
    );

    not_found(
        store.delete_endpoint(&b.account.id, &e.id).await,
        "deleting another account's endpoint",
    );
    delete_all(store, &[&e, &second]).await;
    not_found(store.get_endpoint(None, &e.id).await, "deleted endpoint");
}

pub async fn an_event_gets_one_delivery_per_enabled_endpoint_that_takes_its_type(
    store: &dyn Store,
) {
    let a = create_fixture(store, "wh-fanout").await;
    let other = create_fixture(store, "wh-fanout-other").await;
    let all = new_endpoint(store, &a.account.id, &[]).await;
    let exact = new_endpoint(store, &a.account.id, &["post.created"]).await;
    let prefix = new_endpoint(store, &a.account.id, &["post.*"]).await;
    let elsewhere = new_endpoint(store, &a.account.id, &["key.revoked"]).await;
    let mut disabled = endpoint(&a.account.id, &[]);
    disabled.enabled = false;
    ok(store.create_endpoint(&disabled).await, "create disabled");
    let foreign = new_endpoint(store, &other.account.id, &[]).await;

    let t = now();
    let ev = event(&a.account.id, "post.created", t);
    let ids = ok(
        store.enqueue_event(&ev, &EventTarget::Subscribed).await,
        "enqueue",
    );
    assert_eq!(ids.len(), 3);
    let claimed = ok(store.claim_deliveries("w1", t, lease(t), 10).await, "claim");
    assert_eq!(claimed.len(), 3);
    let mut endpoints: Vec<_> = claimed.iter().map(|c| c.endpoint.id.clone()).collect();
    endpoints.sort();
    let mut expected = vec![all.id.clone(), exact.id.clone(), prefix.id.clone()];
    expected.sort();
    assert_eq!(endpoints, expected);
    for c in &claimed {
        assert_eq!(c.event, ev);
        assert_eq!(c.delivery.event_id, ev.id);
        assert_eq!(c.delivery.event_type, "post.created");
        assert_eq!(c.delivery.status, DeliveryStatus::Pending);
        assert_eq!(c.delivery.attempts, 0);
        assert!(ids.contains(&c.delivery.id));
    }
    delete_all(
        store,
        &[&all, &exact, &prefix, &elsewhere, &disabled, &foreign],
    )
    .await;
}

pub async fn an_event_no_endpoint_takes_writes_nothing(store: &dyn Store) {
    let a = create_fixture(store, "wh-none").await;
    let e = new_endpoint(store, &a.account.id, &["key.revoked"]).await;
    let t = now();
    let ev = event(&a.account.id, "post.created", t);
    assert!(ok(
        store.enqueue_event(&ev, &EventTarget::Subscribed).await,
        "enqueue"
    )
    .is_empty());
    assert!(ok(store.claim_deliveries("w1", t, lease(t), 10).await, "claim").is_empty());
    delete_all(store, &[&e]).await;
}

pub async fn a_test_event_goes_to_its_one_endpoint_of_the_account(store: &dyn Store) {
    let a = create_fixture(store, "wh-test").await;
    let b = create_fixture(store, "wh-test-b").await;
    let target = new_endpoint(store, &a.account.id, &["post.created"]).await;
    let sibling = new_endpoint(store, &a.account.id, &[]).await;
    let t = now();
    let ev = event(&a.account.id, "webhook.test", t);
    let ids = ok(
        store
            .enqueue_event(&ev, &EventTarget::Endpoint(target.id.clone()))
            .await,
        "enqueue",
    );
    assert_eq!(ids.len(), 1);
    let foreign = event(&b.account.id, "webhook.test", t);
    not_found(
        store
            .enqueue_event(&foreign, &EventTarget::Endpoint(target.id.clone()))
            .await,
        "a test event to another account's endpoint",
    );
    let claimed = ok(store.claim_deliveries("w1", t, lease(t), 10).await, "claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].endpoint.id, target.id);
    delete_all(store, &[&target, &sibling]).await;
}

pub async fn a_due_delivery_is_leased_to_one_worker_until_the_lease_passes(store: &dyn Store) {
    let a = create_fixture(store, "wh-lease").await;
    let e = new_endpoint(store, &a.account.id, &[]).await;
    let t = now();
    let ev = event(&a.account.id, "post.created", t);
    ok(
        store.enqueue_event(&ev, &EventTarget::Subscribed).await,
        "enqueue",
    );

    assert!(
        ok(
            store
                .claim_deliveries("w1", t - Duration::seconds(1), lease(t), 10)
                .await,
            "claim before it is due"
        )
        .is_empty(),
        "a delivery is not handed out before it is due"
    );
    let until = t + Duration::seconds(30);
    assert_eq!(
        ok(store.claim_deliveries("w1", t, until, 10).await, "claim").len(),
        1
    );
    assert!(
        ok(
            store
                .claim_deliveries("w2", t + Duration::seconds(29), lease(t), 10)
                .await,
            "claim"
        )
        .is_empty(),
        "a leased delivery is not handed to another worker"
    );
    let later = until + Duration::seconds(1);
    let again = ok(
        store.claim_deliveries("w2", later, lease(later), 10).await,
        "claim",
    );
    assert_eq!(
        again.len(),
        1,
        "an expired lease makes the delivery due again"
    );
    delete_all(store, &[&e]).await;
}

pub async fn concurrent_claims_never_hand_out_a_delivery_twice(store: &dyn Store) {
    let a = create_fixture(store, "wh-race").await;
    let e = new_endpoint(store, &a.account.id, &[]).await;
    let t = now();
    for _ in 0..20 {
        ok(
            store
                .enqueue_event(
                    &event(&a.account.id, "post.created", t),
                    &EventTarget::Subscribed,
                )
                .await,
            "enqueue",
        );
    }
    let (one, two) = both(
        store.claim_deliveries("w1", t, lease(t), 15),
        store.claim_deliveries("w2", t, lease(t), 15),
    )
    .await;
    let (one, two) = (ok(one, "claim one"), ok(two, "claim two"));
    let mut ids: Vec<_> = one
        .iter()
        .chain(&two)
        .map(|c| c.delivery.id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), one.len() + two.len(), "no delivery went to both");
    assert_eq!(ids.len(), 20, "every due delivery went to one of them");
    delete_all(store, &[&e]).await;
}

pub async fn only_the_lease_holder_records_an_attempt(store: &dyn Store) {
    let a = create_fixture(store, "wh-holder").await;
    let e = new_endpoint(store, &a.account.id, &[]).await;
    let t = now();
    ok(
        store
            .enqueue_event(
                &event(&a.account.id, "post.created", t),
                &EventTarget::Subscribed,
            )
            .await,
        "enqueue",
    );
    let claimed = ok(store.claim_deliveries("w1", t, lease(t), 10).await, "claim");
    let id = claimed[0].delivery.id.clone();
    assert_eq!(
        ok(
            store
                .finish_attempt(
                    "w2",
                    &attempt(&id, t, Some(200)),
                    &NextStep::Succeeded,
                    None
                )
                .await,
            "finish by another worker"
        ),
        None
    );
    let health = ok(
        store
            .finish_attempt(
                "w1",
                &attempt(&id, t, Some(200)),
                &NextStep::Succeeded,
                None,
            )
            .await,
        "finish",
    )
    .expect("the holder's attempt counts");
    assert!(health.enabled);
    let done = ok(store.get_delivery(&a.account.id, &id).await, "get");
    assert_eq!(done.status, DeliveryStatus::Succeeded);
    assert_eq!(done.attempts, 1);
    assert_eq!(done.last_status_code, Some(200));
    assert_eq!(
        ok(
            store.list_attempts(std::slice::from_ref(&id)).await,
            "attempts"
        ),
        vec![attempt(&id, t, Some(200))]
    );
    assert_eq!(
        ok(
            store
                .finish_attempt(
                    "w1",
                    &attempt(&id, t, Some(200)),
                    &NextStep::Succeeded,
                    None
                )
                .await,
            "finish twice"
        ),
        None,
        "a finished attempt gives the lease up"
    );
    delete_all(store, &[&e]).await;
}

pub async fn failures_mark_the_endpoint_failing_until_a_success(store: &dyn Store) {
    let a = create_fixture(store, "wh-failing").await;
    let e = new_endpoint(store, &a.account.id, &[]).await;
    let t = now();
    ok(
        store
            .enqueue_event(
                &event(&a.account.id, "post.created", t),
                &EventTarget::Subscribed,
            )
            .await,
        "enqueue",
    );
    let id = ok(store.claim_deliveries("w1", t, lease(t), 10).await, "claim")[0]
        .delivery
        .id
        .clone();
    let retry_at = t + Duration::seconds(5);
    let health = ok(
        store
            .finish_attempt(
                "w1",
                &attempt(&id, t, None),
                &NextStep::RetryAt(retry_at),
                None,
            )
            .await,
        "fail",
    )
    .expect("holder");
    assert_eq!(health.failing_since, Some(t));
    let d = ok(store.get_delivery(&a.account.id, &id).await, "get");
    assert_eq!(
        (d.status, d.attempts, d.next_attempt_at),
        (DeliveryStatus::Pending, 1, retry_at)
    );
    assert_eq!(d.last_error.as_deref(), Some("connection refused"));
    assert!(
        ok(
            store
                .claim_deliveries("w1", t + Duration::seconds(4), lease(t), 10)
                .await,
            "claim"
        )
        .is_empty(),
        "not due before the retry time"
    );

    let t2 = retry_at;
    assert_eq!(
        ok(
            store.claim_deliveries("w1", t2, lease(t2), 10).await,
            "claim"
        )
        .len(),
        1
    );
    let health = ok(
        store
            .finish_attempt(
                "w1",
                &attempt(&id, t2, Some(500)),
                &NextStep::RetryAt(t2 + Duration::seconds(300)),
                None,
            )
            .await,
        "fail again",
    )
    .expect("holder");
    assert_eq!(
        health.failing_since,
        Some(t),
        "failing since the first failure"
    );

    let t3 = t2 + Duration::seconds(300);
    assert_eq!(
        ok(
            store.claim_deliveries("w1", t3, lease(t3), 10).await,
            "claim"
        )
        .len(),
        1
    );
    let health = ok(
        store
            .finish_attempt(
                "w1",
                &attempt(&id, t3, Some(204)),
                &NextStep::Succeeded,
                None,
            )
            .await,
        "succeed",
    )
    .expect("holder");
    assert_eq!(health.failing_since, None);
    assert_eq!(ok(store.list_attempts(&[id]).await, "attempts").len(), 3);
    delete_all(store, &[&e]).await;
}

pub async fn released_leases_are_due_at_once(store: &dyn Store) {
    let a = create_fixture(store, "wh-release").await;
    let e = new_endpoint(store, &a.account.id, &[]).await;
    let t = now();
    ok(
        store
            .enqueue_event(
                &event(&a.account.id, "post.created", t),
                &EventTarget::Subscribed,
            )
            .await,
        "enqueue",
    );
    assert_eq!(
        ok(store.claim_deliveries("w1", t, lease(t), 10).await, "claim").len(),
        1
    );
    assert_eq!(ok(store.release_leases("w1").await, "release"), 1);
    assert_eq!(
        ok(store.claim_deliveries("w2", t, lease(t), 10).await, "claim").len(),
        1,
        "another worker takes it without waiting for the lease"
    );
    delete_all(store, &[&e]).await;
}

pub async fn disabling_an_endpoint_gives_up_its_pending_deliveries(store: &dyn Store) {
    let a = create_fixture(store, "wh-disable").await;
    let e = new_endpoint(store, &a.account.id, &[]).await;
    let t = now();
    let ids = ok(
        store
            .enqueue_event(
                &event(&a.account.id, "post.created", t),
                &EventTarget::Subscribed,
            )
            .await,
        "enqueue",
    );
    ok(
        store.disable_endpoint(&e.id, "410 Gone", t).await,
        "disable",
    );
    let stored = ok(store.get_endpoint(None, &e.id).await, "get");
    assert!(!stored.enabled);
    assert_eq!(stored.disabled_reason.as_deref(), Some("410 Gone"));
    let d = ok(store.get_delivery(&a.account.id, &ids[0]).await, "get");
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert!(ok(store.claim_deliveries("w1", t, lease(t), 10).await, "claim").is_empty());
    not_found(
        store
            .disable_endpoint(&EndpointId::generate(), "x", t)
            .await,
        "disabling an unknown endpoint",
    );
    delete_all(store, &[&e]).await;
}

pub async fn a_replay_is_a_new_delivery_of_the_same_event(store: &dyn Store) {
    let a = create_fixture(store, "wh-replay").await;
    let b = create_fixture(store, "wh-replay-b").await;
    let e = new_endpoint(store, &a.account.id, &[]).await;
    let t = now();
    let ev = event(&a.account.id, "post.created", t);
    let first = ok(
        store.enqueue_event(&ev, &EventTarget::Subscribed).await,
        "enqueue",
    )[0]
    .clone();
    let claimed = ok(store.claim_deliveries("w1", t, lease(t), 10).await, "claim");
    ok(
        store
            .finish_attempt(
                "w1",
                &attempt(&first, t, Some(500)),
                &NextStep::Failed,
                None,
            )
            .await,
        "fail",
    );
    assert_eq!(claimed.len(), 1);
    not_found(
        store.replay_delivery(&b.account.id, &first, t).await,
        "replaying another account's delivery",
    );
    let replay = ok(
        store.replay_delivery(&a.account.id, &first, t).await,
        "replay",
    );
    assert_ne!(replay, first);
    let again = ok(store.claim_deliveries("w1", t, lease(t), 10).await, "claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.id, replay);
    assert_eq!(
        again[0].event.id, ev.id,
        "the same event, so the same webhook-id"
    );
    assert_eq!(
        ok(store.get_delivery(&a.account.id, &first).await, "original").status,
        DeliveryStatus::Failed,
        "the original keeps its outcome"
    );
    delete_all(store, &[&e]).await;
}

pub async fn deliveries_are_listed_newest_first_in_pages_with_their_attempts(store: &dyn Store) {
    let a = create_fixture(store, "wh-list").await;
    let b = create_fixture(store, "wh-list-b").await;
    let e = new_endpoint(store, &a.account.id, &[]).await;
    let t = now();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.extend(ok(
            store
                .enqueue_event(
                    &event(&a.account.id, "post.created", t),
                    &EventTarget::Subscribed,
                )
                .await,
            "enqueue",
        ));
    }
    let first = ok(
        store
            .list_deliveries(&a.account.id, &e.id, &page(None, 2))
            .await,
        "list",
    );
    assert_eq!(first.total, 3);
    assert!(first.has_more);
    let listed: Vec<_> = first.items.iter().map(|d| d.id.clone()).collect();
    assert_eq!(listed, vec![ids[2].clone(), ids[1].clone()]);
    let rest = ok(
        store
            .list_deliveries(&a.account.id, &e.id, &page(Some(ids[1].as_str()), 2))
            .await,
        "list",
    );
    assert_eq!(
        rest.items.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        vec![ids[0].clone()]
    );
    assert!(!rest.has_more);
    assert_eq!(
        ok(
            store
                .list_deliveries(&b.account.id, &e.id, &page(None, 5))
                .await,
            "list"
        )
        .total,
        0,
        "another account sees none"
    );
    assert!(ok(store.list_attempts(&ids).await, "attempts").is_empty());
    delete_all(store, &[&e]).await;
}

pub async fn a_notice_is_claimed_once(store: &dyn Store) {
    let subject = super::unique("notice");
    let t = now();
    assert!(ok(
        store.claim_notice(&subject, "key.expiring", t).await,
        "first"
    ));
    assert!(!ok(
        store.claim_notice(&subject, "key.expiring", t).await,
        "second"
    ));
    assert!(ok(
        store.claim_notice(&subject, "credits.low", t).await,
        "another kind"
    ));
}

pub async fn keys_expiring_in_a_window_are_found_soonest_first(store: &dyn Store) {
    let a = create_fixture(store, "wh-expiring").await;
    // Far in the future, where no other check's keys are.
    let base = now() + Duration::days(365 * 50);
    let mut soon = new_key(Some(&a.account.id), None, "soon");
    soon.expires_at = Some(base + Duration::days(2));
    let mut sooner = new_key(Some(&a.account.id), None, "sooner");
    sooner.expires_at = Some(base + Duration::days(1));
    let mut late = new_key(Some(&a.account.id), None, "late");
    late.expires_at = Some(base + Duration::days(30));
    let mut revoked = new_key(Some(&a.account.id), None, "revoked");
    revoked.expires_at = Some(base + Duration::days(1));
    revoked.revoked_at = Some(now());
    for k in [&soon, &sooner, &late, &revoked] {
        ok(store.create_key(k).await, "create_key");
    }
    let found = ok(
        store
            .keys_expiring(base, base + Duration::days(7), 10)
            .await,
        "keys_expiring",
    );
    let names: Vec<_> = found.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, vec!["sooner", "soon"]);
}

pub async fn purging_keeps_events_with_pending_deliveries(store: &dyn Store) {
    let a = create_fixture(store, "wh-purge").await;
    let e = new_endpoint(store, &a.account.id, &[]).await;
    let old = now() - Duration::days(400);
    let done = ok(
        store
            .enqueue_event(
                &event(&a.account.id, "post.created", old),
                &EventTarget::Subscribed,
            )
            .await,
        "enqueue",
    )[0]
    .clone();
    let pending = ok(
        store
            .enqueue_event(
                &event(&a.account.id, "post.created", old),
                &EventTarget::Subscribed,
            )
            .await,
        "enqueue",
    )[0]
    .clone();
    let claimed = ok(
        store.claim_deliveries("w1", old, lease(old), 10).await,
        "claim",
    );
    assert_eq!(claimed.len(), 2);
    ok(
        store
            .finish_attempt(
                "w1",
                &attempt(&done, old, Some(200)),
                &NextStep::Succeeded,
                None,
            )
            .await,
        "finish",
    );
    ok(store.release_leases("w1").await, "release");
    assert!(
        ok(
            store.purge_webhook_history(old + Duration::days(1)).await,
            "purge"
        ) >= 1
    );
    not_found(
        store.get_delivery(&a.account.id, &done).await,
        "the purged delivery",
    );
    assert_eq!(
        ok(store.get_delivery(&a.account.id, &pending).await, "pending").status,
        DeliveryStatus::Pending
    );
    delete_all(store, &[&e]).await;
}

pub async fn an_attempt_can_disable_its_endpoint_with_it(store: &dyn Store) {
    let a = create_fixture(store, "wh-gone").await;
    let e = new_endpoint(store, &a.account.id, &[]).await;
    let t = now();
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.extend(ok(
            store
                .enqueue_event(
                    &event(&a.account.id, "post.created", t),
                    &EventTarget::Subscribed,
                )
                .await,
            "enqueue",
        ));
    }
    let claimed = ok(store.claim_deliveries("w1", t, lease(t), 1).await, "claim");
    let first = claimed[0].delivery.id.clone();
    let health = ok(
        store
            .finish_attempt(
                "w1",
                &attempt(&first, t, Some(410)),
                &NextStep::Failed,
                Some("410 Gone"),
            )
            .await,
        "finish",
    )
    .expect("holder");
    assert!(!health.enabled);
    let stored = ok(store.get_endpoint(None, &e.id).await, "get");
    assert_eq!(
        (stored.enabled, stored.disabled_reason.as_deref()),
        (false, Some("410 Gone"))
    );
    for id in &ids {
        assert_eq!(
            ok(store.get_delivery(&a.account.id, id).await, "get").status,
            DeliveryStatus::Failed,
            "every pending delivery of the endpoint is given up"
        );
    }
    assert_eq!(ok(store.list_attempts(&[first]).await, "attempts").len(), 1);
    delete_all(store, &[&e]).await;
}
