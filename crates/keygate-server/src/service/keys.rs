//! API keys: issuing (the plaintext leaves here once, to be shown once), changing, revoking and
//! rolling. Every change invalidates the key's cache entry, so it takes effect on this node on
//! the very next request.

use keygate_core::key::{self, GeneratedKey};
use keygate_core::{AccountId, Environment, KeyId, Scope, UserId};
use keygate_store::{ApiKey, KeyStatus};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use super::audit::{self, action, AuditEvent};
use super::now;
use crate::http::ApiError;
use crate::state::AppState;

pub const MAX_METADATA_BYTES: usize = 4096;
pub const DEFAULT_ROLL_GRACE_SECONDS: u64 = 24 * 3600;
pub const MAX_ROLL_GRACE_SECONDS: u64 = 30 * 24 * 3600;

/// The permissions a key may hold beside its scope.
pub const PERMISSIONS: &[&str] = &["verify"];

pub struct KeySpec {
    pub name: String,
    pub description: String,
    pub scope: Scope,
    pub environment: Environment,
    pub expires_at: Option<OffsetDateTime>,
    pub metadata: Value,
    pub rate_limit: Option<String>,
    pub permissions: Vec<String>,
}

pub fn validate_key_name(name: &str) -> Result<String, ApiError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 200 || n.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 200 printable characters",
        ));
    }
    Ok(n.to_owned())
}

pub fn validate_description(d: &str) -> Result<String, ApiError> {
    if d.chars().count() > 1000 {
        return Err(ApiError::invalid_field(
            "description",
            "must be at most 1000 characters",
        ));
    }
    Ok(d.trim().to_owned())
}

pub fn validate_metadata(m: Value) -> Result<Value, ApiError> {
    if !m.is_object() {
        return Err(ApiError::invalid_field("metadata", "must be a JSON object"));
    }
    if m.to_string().len() > MAX_METADATA_BYTES {
        return Err(ApiError::invalid_field(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    Ok(m)
}

pub fn validate_expiry(at: OffsetDateTime) -> Result<OffsetDateTime, ApiError> {
    if at <= OffsetDateTime::now_utc() {
        return Err(ApiError::invalid_field(
            "expires_at",
            "must be in the future",
        ));
    }
    if at.year() > 9999 {
        return Err(ApiError::invalid_field(
            "expires_at",
            "is too far in the future",
        ));
    }
    Ok(at
        .replace_nanosecond(at.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(at))
}

/// A new key record and its plaintext, not yet stored.
pub fn build_key(
    state: &AppState,
    account: Option<&AccountId>,
    created_by: Option<&UserId>,
    spec: KeySpec,
) -> Result<(ApiKey, GeneratedKey), ApiError> {
    let generated = key::generate(&state.config.key_prefix, spec.environment)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("generating a key: {e}")))?;
    let record = ApiKey {
        id: KeyId::generate(),
        account_id: account.cloned(),
        created_by: created_by.cloned(),
        name: spec.name,
        description: spec.description,
        scope: spec.scope,
        environment: spec.environment,
        hash: generated.hash,
        start: generated.start.clone(),
        last4: generated.last4.clone(),
        expires_at: spec.expires_at,
        revoked_at: None,
        rolled_to: None,
        rate_limit: spec.rate_limit,
        permissions: spec.permissions,
        metadata: spec.metadata,
        created_at: now(),
        last_used_at: None,
    };
    Ok((record, generated))
}

pub async fn create_key(
    state: &AppState,
    account: Option<&AccountId>,
    created_by: Option<&UserId>,
    spec: KeySpec,
) -> Result<(ApiKey, GeneratedKey), ApiError> {
    let (record, generated) = build_key(state, account, created_by, spec)?;
    state.store.create_key(&record).await?;
    state.caches.forget_unknown(&record.hash);
    tracing::info!(key_id = %record.id, scope = %record.scope, "api key created");
    audit::record(state, created_event(&record)).await;
    crate::webhooks::events::key_created(state, &record).await;
    Ok((record, generated))
}

/// `key.created`, with what the key may do (never the key itself).
pub fn created_event(k: &ApiKey) -> AuditEvent {
    AuditEvent::new(action::KEY_CREATED, "api_key", &k.id)
        .account(k.account_id.as_ref())
        .details(serde_json::json!({
            "name": k.name,
            "scope": k.scope.as_str(),
            "environment": k.environment.as_str(),
            "start": k.start,
            "operator": k.account_id.is_none(),
        }))
}

/// Saves a changed key and records what changed: `key.scope_changed` for its scope,
/// `key.updated` naming the other fields.
pub async fn update_key(state: &AppState, before: &ApiKey, after: &ApiKey) -> Result<(), ApiError> {
    save_key(state, after).await?;
    let account = after.account_id.as_ref();
    if before.scope != after.scope {
        let event = AuditEvent::new(action::KEY_SCOPE_CHANGED, "api_key", &after.id)
            .account(account)
            .details(
                serde_json::json!({"from": before.scope.as_str(), "to": after.scope.as_str()}),
            );
        audit::record(state, event).await;
    }
    let fields: Vec<&str> = [
        ("name", before.name != after.name),
        ("description", before.description != after.description),
        ("expires_at", before.expires_at != after.expires_at),
        ("metadata", before.metadata != after.metadata),
        ("rate_limit", before.rate_limit != after.rate_limit),
        ("permissions", before.permissions != after.permissions),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect();
    if !fields.is_empty() {
        let event = AuditEvent::new(action::KEY_UPDATED, "api_key", &after.id)
            .account(account)
            .details(serde_json::json!({"fields": fields}));
        audit::record(state, event).await;
    }
    Ok(())
}

/// Writes a changed key and drops it from every node's cache.
pub async fn save_key(state: &AppState, key: &ApiKey) -> Result<(), ApiError> {
    state.store.update_key(key).await?;
    forget_key(state, key).await
}

async fn forget_key(state: &AppState, key: &ApiKey) -> Result<(), ApiError> {
    let subject = crate::revocation::key_subject(&key.hash, &key.id);
    crate::revocation::publish(state, keygate_store::RevocationKind::Key, subject, None).await?;
    Ok(())
}

/// Revokes at once; revoking a revoked key changes nothing.
pub async fn revoke_key(state: &AppState, mut key: ApiKey) -> Result<ApiKey, ApiError> {
    if key.status_at(OffsetDateTime::now_utc()) != KeyStatus::Revoked {
        key.revoked_at = Some(now());
        save_key(state, &key).await?;
        tracing::info!(key_id = %key.id, "api key revoked");
        let event = AuditEvent::new(action::KEY_REVOKED, "api_key", &key.id)
            .account(key.account_id.as_ref())
            .details(serde_json::json!({"name": key.name}));
        audit::record(state, event).await;
        crate::webhooks::events::key_revoked(state, &key).await;
    }
    Ok(key)
}

/// Rolls a key: a new key with the same name, scope and settings; the old one keeps working
/// for `grace_seconds` (0: it is revoked at once).
pub async fn roll_key(
    state: &AppState,
    mut old: ApiKey,
    grace_seconds: u64,
    created_by: Option<&UserId>,
) -> Result<(ApiKey, GeneratedKey), ApiError> {
    let at = now();
    if old.status_at(at) != KeyStatus::Active {
        return Err(ApiError::conflict("only an active key can be rolled"));
    }
    if grace_seconds > MAX_ROLL_GRACE_SECONDS {
        return Err(ApiError::invalid_field(
            "grace_seconds",
            format!("must be at most {MAX_ROLL_GRACE_SECONDS}"),
        ));
    }
    let spec = KeySpec {
        name: old.name.clone(),
        description: old.description.clone(),
        scope: old.scope,
        environment: old.environment,
        expires_at: old.expires_at,
        metadata: old.metadata.clone(),
        rate_limit: old.rate_limit.clone(),
        permissions: old.permissions.clone(),
    };
    let (new, generated) = build_key(
        state,
        old.account_id.as_ref(),
        created_by.or(old.created_by.as_ref()),
        spec,
    )?;
    if grace_seconds == 0 {
        old.revoked_at = Some(at);
    } else {
        let end = at + Duration::seconds(grace_seconds as i64);
        old.expires_at = Some(old.expires_at.map_or(end, |e| e.min(end)));
    }
    old.rolled_to = Some(new.id.clone());
    state.store.roll_key(&old, &new).await?;
    state.caches.forget_unknown(&new.hash);
    forget_key(state, &old).await?;
    tracing::info!(old_key_id = %old.id, new_key_id = %new.id, grace_seconds, "api key rolled");
    let event = AuditEvent::new(action::KEY_ROLLED, "api_key", &old.id)
        .account(old.account_id.as_ref())
        .details(serde_json::json!({"new_key_id": new.id, "grace_seconds": grace_seconds}));
    audit::record(state, event).await;
    crate::webhooks::events::key_rolled(state, &old, &new).await;
    Ok((new, generated))
}

pub fn validate_permissions(p: Vec<String>) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for name in p {
        if !PERMISSIONS.contains(&name.as_str()) {
            return Err(ApiError::invalid_field(
                "permissions",
                format!(
                    "unknown permission {name:?}; known: {}",
                    PERMISSIONS.join(", ")
                ),
            ));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}
