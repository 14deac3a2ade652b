//! The delivery worker every node runs, and the housekeeping beside it.
//!
//! The worker claims due deliveries with a lease (as many as it has free slots), makes one
//! attempt for each in its own task and records it. It wakes when this node enqueues an event,
//! when another node says so over Redis, when an attempt finishes, and otherwise every
//! `webhook_poll_interval` (deliveries whose retry time came, leases that ran out on a node that
//! died). Nothing is held in memory that the database does not also hold: a node killed at any
//! point leaves deliveries that are either pending or leased until a time, and either way
//! another node (or this one, restarted) delivers them.
//!
//! On shutdown it stops claiming, gives in-flight attempts a bounded time to finish and
//! releases the leases of the rest, so another node can take them at once.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use keygate_core::webhook::{self, WebhookSecret};
use keygate_store::{ClaimedDelivery, DeliveryAttempt, NextStep};
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::client::Sender;
use super::endpoints::SECRET_PURPOSE;
use super::events;
use crate::api::keys::KeyOut;
use crate::service::{now, rfc3339};
use crate::state::AppState;

/// How long in-flight attempts may run on after a shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The most deliveries claimed in one statement.
const MAX_CLAIM: usize = 100;
/// How far ahead `key.expiring` warns.
const EXPIRY_NOTICE: time::Duration = time::Duration::days(7);

pub async fn run(state: AppState, mut stopped: watch::Receiver<bool>) {
    let sender = match Sender::new(
        state.config.webhook_timeout,
        state.config.webhooks_allow_private,
    ) {
        Ok(s) => Arc::new(s),
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "webhook delivery is off: no TLS configuration");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(state.config.webhook_concurrency.max(1)));
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let owner = state.webhook_owner.as_str();
    loop {
        let free = slots.available_permits().min(MAX_CLAIM);
        let mut claimed_all = false;
        if free > 0 {
            let at = now();
            let lease_until = at
                + time::Duration::try_from(state.config.webhook_lease)
                    .unwrap_or(time::Duration::MINUTE);
            match state
                .store
                .claim_deliveries(owner, at, lease_until, free as u32)
                .await
            {
                Ok(batch) => {
                    claimed_all = batch.len() == free;
                    for claimed in batch {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            break;
                        };
                        let (state, sender) = (state.clone(), sender.clone());
                        in_flight.spawn(async move {
                            attempt(&state, &sender, claimed).await;
                            drop(permit);
                        });
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "claiming webhook deliveries failed; will retry")
                }
            }
        }
        // A full batch: more may be due right away.
        if claimed_all {
            continue;
        }
        tokio::select! {
            _ = state.webhook_wakeup.notified() => {}
            _ = tokio::time::sleep(state.config.webhook_poll_interval) => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            _ = stopped.wait_for(|s| *s) => break,
        }
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        in_flight.abort_all();
    }
    match state.store.release_leases(owner).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(released = n, "released webhook leases on shutdown"),
        Err(err) => {
            tracing::warn!(error = %err, "could not release webhook leases; they expire by themselves")
        }
    }
}

/// One attempt of one delivery, recorded.
async fn attempt(state: &AppState, sender: &Sender, claimed: ClaimedDelivery) {
    let ClaimedDelivery {
        delivery,
        event,
        endpoint,
    } = claimed;
    let at = now();
    let record =
        |status_code, latency_ms, error: Option<String>, response_excerpt| DeliveryAttempt {
            delivery_id: delivery.id.clone(),
            attempted_at: at,
            status_code,
            latency_ms,
            error,
            response_excerpt,
        };
    if !endpoint.enabled {
        let failed = record(None, 0, Some("endpoint disabled".into()), String::new());
        finish(state, &failed, NextStep::Failed, None).await;
        return;
    }
    let secrets = open_secrets(state, &endpoint);
    let Some((current, previous)) = secrets else {
        let error =
            "the endpoint's secret cannot be opened with this server's master key".to_owned();
        let next = retry_step(delivery.attempts + 1, None, at);
        finish(
            state,
            &record(None, 0, Some(error), String::new()),
            next,
            None,
        )
        .await;
        return;
    };
    let timestamp = at.unix_timestamp();
    let signing = webhook::signing_secrets(
        &current,
        previous
            .as_ref()
            .map(|(secret, rotated_at)| (secret, rotated_at.unix_timestamp())),
        timestamp,
    );
    let signature = webhook::signature_header(
        &signing,
        event.id.as_str(),
        timestamp,
        event.payload.as_bytes(),
    );
    let mut headers = Vec::with_capacity(3);
    for (name, value) in [
        ("webhook-id", event.id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.push((HeaderName::from_static(name), value));
        }
    }
    let outcome = sender
        .send(&endpoint.url, headers, Bytes::from(event.payload.clone()))
        .await;
    let latency_ms = u32::try_from(outcome.latency.as_millis()).unwrap_or(u32::MAX);
    let gone = outcome.status == Some(410);
    let next = if outcome.succeeded() {
        NextStep::Succeeded
    } else if gone {
        NextStep::Failed
    } else {
        let retry_after = outcome
            .retry_after
            .as_deref()
            .and_then(|v| webhook::parse_retry_after(v, timestamp));
        retry_step(delivery.attempts + 1, retry_after, at)
    };
    tracing::info!(
        delivery_id = %delivery.id,
        endpoint_id = %endpoint.id,
        event_type = %event.event_type,
        attempt = delivery.attempts + 1,
        status = outcome.status,
        latency_ms,
        error = outcome.error.as_deref(),
        "webhook attempt"
    );
    // Whether this attempt disables the endpoint is decided now and recorded with it, in one
    // transaction: nobody sees a failed delivery of an endpoint that is still enabled.
    let disable_after = time::Duration::try_from(state.config.webhook_disable_after)
        .unwrap_or(time::Duration::days(5));
    let disable = if gone {
        Some("the receiver answered 410 Gone".to_owned())
    } else {
        endpoint
            .failing_since
            .filter(|since| next != NextStep::Succeeded && at - *since >= disable_after)
            .map(|since| format!("every attempt has failed since {}", rfc3339(since)))
    };
    let attempt = record(outcome.status, latency_ms, outcome.error, outcome.excerpt);
    let recorded = finish(state, &attempt, next, disable.as_deref()).await;
    if let (Some(_), Some(reason)) = (recorded, disable) {
        tell_owner(state, &endpoint, &reason).await;
    }
}

fn retry_step(
    attempt_number: u32,
    retry_after: Option<Duration>,
    at: time::OffsetDateTime,
) -> NextStep {
    let unit: f64 = rand::random();
    match webhook::next_attempt_delay(attempt_number, retry_after, unit) {
        Some(delay) => {
            NextStep::RetryAt(at + time::Duration::try_from(delay).unwrap_or(time::Duration::HOUR))
        }
        None => NextStep::Failed,
    }
}

type Secrets = (WebhookSecret, Option<(WebhookSecret, time::OffsetDateTime)>);

fn open_secrets(state: &AppState, endpoint: &keygate_store::WebhookEndpoint) -> Option<Secrets> {
    let open = |sealed: &str| {
        let bytes = state.tokens.open_secret(SECRET_PURPOSE, sealed).ok()?;
        WebhookSecret::from_bytes(&bytes).ok()
    };
    let current = open(&endpoint.sealed_secret)?;
    let previous = endpoint
        .previous_secret
        .as_ref()
        .and_then(|(sealed, at)| Some((open(sealed)?, *at)));
    Some((current, previous))
}

async fn finish(
    state: &AppState,
    attempt: &DeliveryAttempt,
    next: NextStep,
    disable: Option<&str>,
) -> Option<keygate_store::EndpointHealth> {
    match state
        .store
        .finish_attempt(&state.webhook_owner, attempt, &next, disable)
        .await
    {
        Ok(health) => health,
        Err(err) => {
            // The lease runs out and the delivery is tried again: at least once, not lost.
            tracing::warn!(error = %err, delivery_id = %attempt.delivery_id, "could not record a webhook attempt");
            None
        }
    }
}

/// Tells an endpoint's owner that Keygate disabled it: a `webhook.endpoint.disabled` event to
/// the account's other endpoints, and a warning in the log.
async fn tell_owner(state: &AppState, endpoint: &keygate_store::WebhookEndpoint, reason: &str) {
    tracing::warn!(endpoint_id = %endpoint.id, account_id = %endpoint.account_id, reason, "webhook endpoint disabled");
    let data = json!({ "endpoint_id": endpoint.id, "url": endpoint.url, "reason": reason });
    events::emit(
        state,
        Some(&endpoint.account_id),
        "webhook.endpoint.disabled",
        data,
    )
    .await;
}

/// Once a minute: `key.expiring` for keys that expire within a week (once per key); once an
/// hour: deletes delivered history older than `webhook_retention`.
pub async fn housekeeping(state: AppState, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut minutes = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        if let Err(err) = warn_expiring_keys(&state).await {
            tracing::warn!(error = %err, "key.expiring scan failed; will retry");
        }
        if minutes.is_multiple_of(60) {
            let before = now()
                - time::Duration::try_from(state.config.webhook_retention)
                    .unwrap_or(time::Duration::days(30));
            match state.store.purge_webhook_history(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "purged old webhook history"),
                Err(err) => tracing::warn!(error = %err, "purging webhook history failed"),
            }
        }
        minutes += 1;
    }
}

pub async fn warn_expiring_keys(state: &AppState) -> keygate_store::StoreResult<()> {
    let at = now();
    let keys = state
        .store
        .keys_expiring(at, at + EXPIRY_NOTICE, 500)
        .await?;
    for key in keys {
        if state
            .store
            .claim_notice(key.id.as_str(), "key.expiring", at)
            .await?
        {
            let data =
                json!({ "key": KeyOut::new(&key, at), "expires_at": key.expires_at.map(rfc3339) });
            events::emit(state, key.account_id.as_ref(), "key.expiring", data).await;
        }
    }
    Ok(())
}
