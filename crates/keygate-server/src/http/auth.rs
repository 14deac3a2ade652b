//! Authentication and authorization as extractors. A handler names what it needs in its
//! signature (`Reader`, `Writer`, `Admin`, `Operator`), so none can forget to check.
//!
//! Hot path, in order: find the credential in the headers → shape and checksum check (no
//! lookup for a malformed or invented key) → SHA-256 → key cache → database only on a miss →
//! status (revoked, expired, account disabled) → scope. It writes nothing to the database:
//! usage is counted in memory (see `usage.rs`).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use keygate_core::{key, AccountId, KeyId, Scope, UserId};
use keygate_store::{AccountStatus, KeyStatus, KeyWithAccount, StoreError};
use time::OffsetDateTime;

use super::ApiError;
use crate::state::AppState;

pub const INVALID_KEY: &str = "Invalid API key provided";

/// Who is calling, and with what rights.
#[derive(Clone, Debug)]
pub struct Principal {
    pub scope: Scope,
    /// `None` for an operator, who acts across accounts.
    pub account_id: Option<AccountId>,
    /// The user the credential speaks for: the key's creator.
    pub user_id: Option<UserId>,
    pub key: Arc<KeyWithAccount>,
}

impl Principal {
    pub fn is_operator(&self) -> bool {
        self.key.key.is_operator()
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key.key.id
    }

    pub fn require(&self, needed: Scope) -> Result<(), ApiError> {
        if self.scope.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "This credential's scope ({}) does not allow this action; it needs {needed}",
                self.scope
            )))
        }
    }

    /// The account a request about `account` may act on: its own, or any for an operator.
    /// Another account's id is "not found", so ids of other tenants cannot be probed.
    pub fn account_access(&self, account: &AccountId) -> Result<(), ApiError> {
        if self.is_operator() || self.account_id.as_ref() == Some(account) {
            Ok(())
        } else {
            Err(ApiError::not_found("Account"))
        }
    }

    /// The caller's own account; operators have none and are told to name one.
    pub fn own_account(&self) -> Result<&AccountId, ApiError> {
        self.account_id.as_ref().ok_or_else(|| {
            ApiError::forbidden("Operator keys belong to no account; use the account's own routes")
        })
    }
}

/// The credential a request carries: `Authorization: Bearer …`, else `X-API-Key`, else
/// `X-Auth-Token`. A header that is not visible ASCII is treated as a wrong credential.
pub fn credential(headers: &HeaderMap) -> Result<&str, ApiError> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| ApiError::unauthorized(INVALID_KEY))?;
        let (scheme, rest) = v
            .split_once(' ')
            .ok_or_else(|| ApiError::unauthorized(INVALID_KEY))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::unauthorized(
                "Use Authorization: Bearer <API key>",
            ));
        }
        return Ok(rest.trim());
    }
    for name in ["x-api-key", "x-auth-token"] {
        if let Some(v) = headers.get(name) {
            return v
                .to_str()
                .map(str::trim)
                .map_err(|_| ApiError::unauthorized(INVALID_KEY));
        }
    }
    Err(ApiError::unauthorized(
        "No API key provided: send Authorization: Bearer <API key>",
    ))
}

/// Hot path. See the module comment for the order of checks.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let raw = credential(headers)?;
    let parsed = key::parse(raw).map_err(|_| ApiError::unauthorized(INVALID_KEY))?;
    let hash = parsed.hash();
    let entry = match state.keys.get(&hash) {
        Some(entry) => entry,
        None => {
            let epoch = state.keys.epoch();
            let found = match state.store.find_key_by_hash(&hash).await {
                Ok(found) => Arc::new(found),
                Err(StoreError::NotFound) => return Err(ApiError::unauthorized(INVALID_KEY)),
                Err(err) => return Err(err.into()),
            };
            state.keys.insert(hash, found.clone(), epoch);
            found
        }
    };
    let now = OffsetDateTime::now_utc();
    match entry.key.status_at(now) {
        KeyStatus::Active => {}
        KeyStatus::Revoked => return Err(ApiError::unauthorized("This API key has been revoked")),
        KeyStatus::Expired => return Err(ApiError::unauthorized("This API key has expired")),
    }
    if entry
        .account
        .as_ref()
        .is_some_and(|a| a.status != AccountStatus::Active)
    {
        return Err(ApiError::unauthorized("This account is disabled"));
    }
    let k = &entry.key;
    state.usage.record(hash, &k.id, k.account_id.as_ref(), now);
    Ok(Principal {
        scope: k.scope,
        account_id: k.account_id.clone(),
        user_id: k.created_by.clone(),
        key: entry.clone(),
    })
}

macro_rules! scoped_extractor {
    ($(#[$doc:meta])* $name:ident, $scope:expr) => {
        $(#[$doc])*
        pub struct $name(pub Principal);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
                let principal = match parts.extensions.get::<Principal>() {
                    Some(p) => p.clone(),
                    None => {
                        let p = authenticate(state, &parts.headers).await?;
                        parts.extensions.insert(p.clone());
                        p
                    }
                };
                principal.require($scope)?;
                Ok($name(principal))
            }
        }
    };
}

scoped_extractor!(
    /// Any valid credential: reading.
    Reader,
    Scope::Read
);
scoped_extractor!(
    /// A credential with `write` or more: creating, changing, revoking.
    Writer,
    Scope::Write
);
scoped_extractor!(
    /// A credential with `admin`: account settings, users, admin keys.
    Admin,
    Scope::Admin
);

/// An operator key: acts across all accounts (account administration, plans, credits).
pub struct Operator(pub Principal);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Admin(principal) = Admin::from_request_parts(parts, state).await?;
        if !principal.is_operator() {
            return Err(ApiError::forbidden("This action needs an operator key"));
        }
        Ok(Operator(principal))
    }
}
