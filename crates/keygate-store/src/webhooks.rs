//! Webhook storage: endpoints, the transactional outbox of events and their deliveries, and the
//! log of delivery attempts.
//!
//! The outbox is what makes delivery at-least-once. [`WebhookStore::enqueue_event`] writes an
//! event and one pending delivery per subscribed endpoint in one transaction, so an event that
//! was accepted is never without its deliveries. Workers on any node claim due deliveries with a
//! lease ([`WebhookStore::claim_deliveries`]; `FOR UPDATE SKIP LOCKED` on PostgreSQL, SQLite's
//! single writer elsewhere), make one attempt each and record it with
//! [`WebhookStore::finish_attempt`], which only takes effect while the worker still holds the
//! lease. A worker that dies mid-attempt leaves a lease that expires, and the delivery is
//! claimed again: a receiver may see a message twice, never zero times.

use async_trait::async_trait;
use keygate_core::{AccountId, DeliveryId, EndpointId, EventId};
use time::OffsetDateTime;

use crate::{Page, PageRequest, StoreResult};

#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEndpoint {
    pub id: EndpointId,
    pub account_id: AccountId,
    pub url: String,
    pub description: String,
    /// Event types, `prefix.*` or `*`; empty: every event.
    pub event_types: Vec<String>,
    /// The signing secret (`whsec_…`), sealed with the master key; the store never sees it open.
    pub sealed_secret: String,
    /// The secret before the last rotation, sealed, and when that rotation happened: it keeps
    /// signing beside the new one for a day.
    pub previous_secret: Option<(String, OffsetDateTime)>,
    pub enabled: bool,
    /// Why the endpoint was disabled by Keygate (410 Gone, failing for days), for its owner.
    pub disabled_reason: Option<String>,
    /// The first failed attempt since the last success; cleared by a success.
    pub failing_since: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// An event as it is delivered: `payload` is the exact body every endpoint receives.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEvent {
    pub id: EventId,
    pub account_id: AccountId,
    pub event_type: String,
    pub payload: String,
    pub created_at: OffsetDateTime,
}

/// Which endpoints an event goes to.
#[derive(Clone, Debug)]
pub enum EventTarget {
    /// Every enabled endpoint of the account whose filters take the event's type.
    Subscribed,
    /// One endpoint, whatever its filters (the test message); it must belong to the account.
    Endpoint(EndpointId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    Succeeded,
    /// Given up: attempts exhausted, or the endpoint was disabled or deleted.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "succeeded" => DeliveryStatus::Succeeded,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct WebhookDelivery {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub event_type: String,
    pub endpoint_id: EndpointId,
    pub account_id: AccountId,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (meaningful while pending).
    pub next_attempt_at: OffsetDateTime,
    /// The last attempt's HTTP status, or its error when no response came.
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A delivery a worker holds the lease of, with what it needs to make the attempt.
#[derive(Clone, Debug)]
pub struct ClaimedDelivery {
    pub delivery: WebhookDelivery,
    pub event: WebhookEvent,
    pub endpoint: WebhookEndpoint,
}

/// One attempt, as the deliveries log shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryAttempt {
    pub delivery_id: DeliveryId,
    pub attempted_at: OffsetDateTime,
    /// `None` when no response came (refused destination, timeout, connection error).
    pub status_code: Option<u16>,
    pub latency_ms: u32,
    pub error: Option<String>,
    /// The start of the response body, bounded and lossily decoded.
    pub response_excerpt: String,
}

/// What happens to a delivery after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum NextStep {
    Succeeded,
    RetryAt(OffsetDateTime),
    Failed,
}

/// An endpoint's health after an attempt was recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointHealth {
    pub enabled: bool,
    pub failing_since: Option<OffsetDateTime>,
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_endpoint(&self, endpoint: &WebhookEndpoint) -> StoreResult<()>;
    /// `account` `None`: any account's (operators).
    async fn get_endpoint(
        &self,
        account: Option<&AccountId>,
        id: &EndpointId,
    ) -> StoreResult<WebhookEndpoint>;
    async fn list_endpoints(
        &self,
        account: &AccountId,
        page: &PageRequest,
    ) -> StoreResult<Page<WebhookEndpoint>>;
    /// Writes every field but `id`, `account_id` and `created_at`.
    async fn update_endpoint(&self, endpoint: &WebhookEndpoint) -> StoreResult<()>;
    /// Deletes the endpoint with its deliveries and their attempts.
    async fn delete_endpoint(&self, account: &AccountId, id: &EndpointId) -> StoreResult<()>;
    /// Disables an endpoint, giving up on its pending deliveries.
    async fn disable_endpoint(
        &self,
        id: &EndpointId,
        reason: &str,
        now: OffsetDateTime,
    ) -> StoreResult<()>;

    /// Writes the event and a pending delivery, due at once, for each endpoint it goes to, in
    /// one transaction; returns those deliveries. When no endpoint takes it nothing is written.
    async fn enqueue_event(
        &self,
        event: &WebhookEvent,
        target: &EventTarget,
    ) -> StoreResult<Vec<DeliveryId>>;
    /// Leases up to `limit` due deliveries to `owner` until `lease_until`. Deliveries leased
    /// by a worker whose lease has passed are due again.
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Records an attempt and moves the delivery on, if `owner` still holds its lease (returns
    /// `None` otherwise: another worker has it now). Updates the endpoint's `failing_since`;
    /// with `disable`, also disables the endpoint for that reason, in the same transaction.
    async fn finish_attempt(
        &self,
        owner: &str,
        attempt: &DeliveryAttempt,
        next: &NextStep,
        disable: Option<&str>,
    ) -> StoreResult<Option<EndpointHealth>>;
    /// Gives back `owner`'s leases at once (a clean shutdown), so another node need not wait.
    async fn release_leases(&self, owner: &str) -> StoreResult<u64>;

    async fn get_delivery(
        &self,
        account: &AccountId,
        id: &DeliveryId,
    ) -> StoreResult<WebhookDelivery>;
    /// An endpoint's deliveries, newest first.
    async fn list_deliveries(
        &self,
        account: &AccountId,
        endpoint: &EndpointId,
        page: &PageRequest,
    ) -> StoreResult<Page<WebhookDelivery>>;
    /// The attempts of these deliveries, oldest first.
    async fn list_attempts(&self, deliveries: &[DeliveryId]) -> StoreResult<Vec<DeliveryAttempt>>;
    /// A new pending delivery of the same event to the same endpoint (same `webhook-id`).
    async fn replay_delivery(
        &self,
        account: &AccountId,
        id: &DeliveryId,
        now: OffsetDateTime,
    ) -> StoreResult<DeliveryId>;

    /// Records that a one-off notice (`kind` about `subject`) was sent; `false` when it already
    /// was. Keygate's own events use it so that, say, `key.expiring` goes out once per key.
    async fn claim_notice(
        &self,
        subject: &str,
        kind: &str,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Live keys (not revoked, not rolled) that expire after `from` and at or before `to`, for
    /// `key.expiring`; at most `limit`, soonest first.
    async fn keys_expiring(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<crate::ApiKey>>;
    /// Deletes finished deliveries, their attempts and events older than `before`.
    async fn purge_webhook_history(&self, before: OffsetDateTime) -> StoreResult<u64>;
}
