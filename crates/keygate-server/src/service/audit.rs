//! The audit log: every security-relevant act, recorded with who did it, the account, the
//! client's address, the time, the request id and the object acted on — never a secret (no
//! key, token, password or credential digest; [`record`] drops such fields from `details` as a
//! last line of defence).
//!
//! Recording is one call. Inside a request the actor (the request's authenticated credential),
//! the client address (see `http::client`) and the request id come from the request context,
//! so a feature names only what happened:
//!
//! ```ignore
//! audit::record(
//!     &state,
//!     AuditEvent::new(action::KEY_CREATED, "api_key", &key.id)
//!         .account(key.account_id.as_ref())
//!         .details(json!({"name": key.name, "scope": key.scope})),
//! )
//! .await;
//! ```
//!
//! Outside a request (the admin commands) the actor, address and request id are empty. Where
//! no credential authenticated the request (a login), name the actor with
//! [`AuditEvent::actor`]. A failed write is logged, never turned into a failed request: the act
//! it records has already happened.
//!
//! Entries are kept for `audit_retention_days` (0: for ever) and purged hourly by
//! [`purge_periodically`].

use std::time::Duration;

use keygate_core::{AccountId, KeyId, UserId};
use keygate_store::AuditEntry;
use serde_json::Value;
use tokio::sync::watch;

use crate::http::auth::Principal;
use crate::state::AppState;

/// The action names. Add a feature's own here, in the same `object.verb` style, so the list
/// stays the one reference for `GET /api/v1/audit-log?action=…`.
pub mod action {
    // API keys (object `api_key`).
    pub const KEY_CREATED: &str = "key.created";
    pub const KEY_REVOKED: &str = "key.revoked";
    /// Object: the old key; `details.new_key_id` names its replacement.
    pub const KEY_ROLLED: &str = "key.rolled";
    /// `details.from`, `details.to`.
    pub const KEY_SCOPE_CHANGED: &str = "key.scope_changed";
    /// Any other change (name, description, expiry, metadata, rate limit): `details.fields`.
    pub const KEY_UPDATED: &str = "key.updated";

    // Users (object `user`).
    pub const USER_CREATED: &str = "user.created";
    pub const USER_DELETED: &str = "user.deleted";
    /// `details.from`, `details.to`.
    pub const USER_ROLE_CHANGED: &str = "user.role_changed";
    pub const USER_PASSWORD_CHANGED: &str = "user.password_changed";
    /// Email, username or names: `details.fields`.
    pub const USER_UPDATED: &str = "user.updated";
    /// Reserved for the dashboard's password reset.
    pub const PASSWORD_RESET: &str = "user.password_reset";

    // Logins (object `user`): `PUT /v2/user_auth` today, the dashboard's login later.
    /// `details.method`: `user_auth` (Crossbar credentials) or `password` (dashboard).
    pub const LOGIN_SUCCEEDED: &str = "login.succeeded";
    /// `details.reason`; the object is the user when one matched, else none.
    pub const LOGIN_FAILED: &str = "login.failed";
    /// An auth token logged out (object `token`, its id).
    pub const TOKEN_REVOKED: &str = "token.revoked";

    // Accounts (object `account`).
    pub const ACCOUNT_CREATED: &str = "account.created";
    pub const ACCOUNT_UPDATED: &str = "account.updated";
    /// `details.from`, `details.to`.
    pub const ACCOUNT_PLAN_CHANGED: &str = "account.plan_changed";
    /// `details.from`, `details.to` (`active`, `disabled`).
    pub const ACCOUNT_STATUS_CHANGED: &str = "account.status_changed";
    pub const ACCOUNT_DELETED: &str = "account.deleted";

    // Credits (object `credits`, the ledger entry's id).
    /// `details.amount`, `details.balance_after`.
    pub const CREDITS_GRANTED: &str = "credits.granted";

    // Token signing keys (object `signing_key`, its kid).
    pub const SIGNING_KEY_ROTATED: &str = "signing_key.rotated";

    // Webhook endpoints (object `webhook_endpoint`; `details.host` is the URL's scheme and
    // host only, since a path may carry a token of the receiver's).
    pub const WEBHOOK_ENDPOINT_CREATED: &str = "webhook.endpoint.created";
    /// `details.fields`; enabling and disabling too (`details.enabled`).
    pub const WEBHOOK_ENDPOINT_UPDATED: &str = "webhook.endpoint.updated";
    pub const WEBHOOK_ENDPOINT_DELETED: &str = "webhook.endpoint.deleted";
    pub const WEBHOOK_SECRET_ROTATED: &str = "webhook.endpoint.secret_rotated";

    // Reserved for the features that record them (objects `oauth_client`, `oauth_consent`).
    pub const OAUTH_CLIENT_CREATED: &str = "oauth.client.created";
    pub const OAUTH_CLIENT_UPDATED: &str = "oauth.client.updated";
    pub const OAUTH_CLIENT_DELETED: &str = "oauth.client.deleted";
    pub const OAUTH_CONSENT_GRANTED: &str = "oauth.consent.granted";
    pub const OAUTH_CONSENT_REVOKED: &str = "oauth.consent.revoked";
}

/// Who did an act: the key it was done with and the user it speaks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actor {
    pub key_id: Option<KeyId>,
    pub user_id: Option<UserId>,
}

impl Actor {
    pub fn of(p: &Principal) -> Self {
        Actor {
            key_id: p.key_id().cloned(),
            user_id: p.user_id.clone(),
        }
    }

    pub fn user(id: &UserId) -> Self {
        Actor {
            key_id: None,
            user_id: Some(id.clone()),
        }
    }
}

/// One act to record; see the module comment.
#[derive(Debug)]
pub struct AuditEvent {
    pub action: &'static str,
    pub account: Option<AccountId>,
    /// `None`: the request's authenticated credential, if any.
    pub actor: Option<Actor>,
    pub object_type: &'static str,
    pub object_id: Option<String>,
    pub details: Value,
}

impl AuditEvent {
    pub fn new(action: &'static str, object_type: &'static str, object_id: impl ToString) -> Self {
        AuditEvent {
            action,
            account: None,
            actor: None,
            object_type,
            object_id: Some(object_id.to_string()),
            details: Value::Object(Default::default()),
        }
    }

    /// An act on no particular object (a failed login that matched no user).
    pub fn without_object(action: &'static str, object_type: &'static str) -> Self {
        AuditEvent {
            object_id: None,
            ..AuditEvent::new(action, object_type, "")
        }
    }

    pub fn account(mut self, account: Option<&AccountId>) -> Self {
        self.account = account.cloned();
        self
    }

    pub fn actor(mut self, actor: Actor) -> Self {
        self.actor = Some(actor);
        self
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// Field names that could carry a secret; they never reach the log.
const SECRET_FIELDS: &[&str] = &[
    "key",
    "api_key",
    "plaintext",
    "password",
    "credentials",
    "secret",
    "token",
    "auth_token",
    "access_token",
    "refresh_token",
    "client_secret",
];

fn scrub(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !SECRET_FIELDS.contains(&k.to_ascii_lowercase().as_str()));
            map.values_mut().for_each(scrub);
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// The entry an event becomes, completed from the request context.
pub fn entry_of(event: AuditEvent) -> AuditEntry {
    let context = crate::http::request_id::context();
    let actor = event
        .actor
        .or_else(|| context.as_ref().and_then(|c| c.actor()))
        .unwrap_or_default();
    let mut details = event.details;
    scrub(&mut details);
    AuditEntry {
        id: format!("aud_{}", uuid::Uuid::now_v7().simple()),
        at: super::now(),
        action: event.action.to_owned(),
        account_id: event.account,
        actor_key_id: actor.key_id,
        actor_user_id: actor.user_id,
        object_type: event.object_type.to_owned(),
        object_id: event.object_id,
        client_addr: context.as_ref().map(|c| c.client.addr.to_string()),
        request_id: context.map(|c| c.id.clone()),
        details,
    }
}

/// Records an act. See the module comment.
pub async fn record(state: &AppState, event: AuditEvent) {
    let entry = entry_of(event);
    if let Err(err) = state.store.record_audit(&entry).await {
        tracing::error!(action = %entry.action, object_id = ?entry.object_id, error = %err, "writing the audit log failed");
    }
}

/// Deletes the entries past the retention period; none when it is 0 (kept for ever).
pub async fn purge_expired(state: &AppState) -> anyhow::Result<u64> {
    let days = state.config.audit_retention_days;
    if days == 0 {
        return Ok(0);
    }
    let before = super::now() - time::Duration::days(i64::from(days));
    Ok(state.store.purge_audit(before).await?)
}

const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Purges at start and every hour until the server stops.
pub async fn purge_periodically(state: AppState, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        match purge_expired(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "purged audit entries past retention"),
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "purging the audit log failed; will retry")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_fields_are_dropped_at_any_depth() {
        let mut v = serde_json::json!({
            "name": "Production",
            "key": "ak_live_x",
            "nested": {"Password": "hunter2", "scope": "write"},
            "list": [{"token": "eyJ"}],
        });
        scrub(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"name": "Production", "nested": {"scope": "write"}, "list": [{}]})
        );
    }
}
