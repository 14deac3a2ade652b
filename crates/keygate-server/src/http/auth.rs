//! Authentication and authorization as extractors. A handler names what it needs in its
//! signature (`Reader`, `Writer`, `Admin`, `Operator`), so none can forget to check.
//!
//! Hot path for an API key, in order: find the credential in the headers → shape and checksum
//! check (no lookup for a malformed or invented key) → SHA-256 → key cache → database only on a
//! miss → status (revoked, expired, account disabled) → scope. For an auth token: signature,
//! issuer and expiry (no I/O) → deny-list → the key or user it names, through the same caches.
//! Neither writes to the database: usage is counted in memory (see `usage.rs`).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use keygate_core::{key, AccountId, KeyHash, KeyId, Scope, UserId};
use keygate_store::{Account, AccountStatus, KeyStatus, KeyWithAccount, Role, StoreError};
use keygate_token::{AccessClaims, AuthClaims, AuthMethod, TokenError};
use time::OffsetDateTime;

use super::ApiError;
use crate::cache::UserWithAccount;
use crate::state::AppState;
use crate::tokens::looks_like_jwt;

pub const INVALID_KEY: &str = "Invalid API key provided";
pub const INVALID_TOKEN: &str = "Invalid or expired auth token";

/// The auth token a request was made with.
#[derive(Debug)]
pub struct TokenInUse {
    pub claims: Arc<AuthClaims>,
    /// Echoed in Crossbar envelopes (`auth_token`), as Crossbar does.
    pub raw: String,
}

/// The OAuth 2.0 access token (RFC 9068) a request was made with.
#[derive(Debug)]
pub struct OAuthAccess {
    pub claims: Arc<AccessClaims>,
    /// The account a client credentials token acts in; a user's token finds it in
    /// [`Principal::user`].
    pub account: Option<Arc<Account>>,
}

/// Who is calling, and with what rights.
///
/// An OAuth access token for a user is that user's credential narrowed to the scopes the
/// user granted the client (`user` and `user_id` set, `oauth` set, no key). A client
/// credentials token acts for the client's account with at most the client's scope, with no
/// user (`user_id` `None`): like an account-level key that nobody owns.
#[derive(Clone, Debug)]
pub struct Principal {
    pub scope: Scope,
    /// `None` for an operator, who acts across accounts.
    pub account_id: Option<AccountId>,
    /// The user the credential speaks for: the key's creator, or the user who logged in.
    pub user_id: Option<UserId>,
    /// The key in use, or the key a token was minted from.
    pub key: Option<Arc<KeyWithAccount>>,
    /// The user a `user_auth` token was minted for.
    pub user: Option<Arc<UserWithAccount>>,
    pub token: Option<Arc<TokenInUse>>,
    pub oauth: Option<Arc<OAuthAccess>>,
}

impl std::fmt::Debug for UserWithAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserWithAccount({})", self.user.id)
    }
}

impl Principal {
    pub fn is_operator(&self) -> bool {
        self.token.is_none() && self.key.as_ref().is_some_and(|k| k.key.is_operator())
    }

    pub fn key_id(&self) -> Option<&KeyId> {
        self.key.as_ref().map(|k| &k.key.id)
    }

    pub fn account(&self) -> Option<&Account> {
        match (&self.key, &self.user) {
            (Some(k), _) => k.account.as_deref(),
            (None, Some(u)) => Some(&u.account),
            (None, None) => self.oauth.as_ref().and_then(|o| o.account.as_deref()),
        }
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
                "Use Authorization: Bearer <API key or auth token>",
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

/// Hot path: authenticates whatever credential the headers carry. Failures count against the
/// client's address (`ip`), which is refused with 429 once it has failed too often.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    ip: Option<IpAddr>,
) -> Result<Principal, ApiError> {
    let raw = match credential(headers) {
        Ok(raw) => raw,
        // No credential at all is a mistake, not a guess: it is not counted.
        Err(err) => return Err(err),
    };
    let result = if looks_like_jwt(raw) {
        authenticate_token(state, raw).await
    } else {
        authenticate_key(state, raw, ip).await
    };
    match result {
        Ok(p) => {
            super::request_id::set_principal(&p);
            Ok(p)
        }
        Err(err @ ApiError::Unauthorized(_)) => {
            Err(crate::ratelimit::authentication_failed(state, ip, err).await)
        }
        Err(err) => Err(err),
    }
}

/// Why a key could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// Malformed, unknown, or (to a caller who may not see it) another account's.
    NotFound,
    Revoked,
    Expired,
    /// Its account is disabled.
    Disabled,
}

impl KeyRefusal {
    pub fn message(self) -> &'static str {
        match self {
            KeyRefusal::NotFound => INVALID_KEY,
            KeyRefusal::Revoked => "This API key has been revoked",
            KeyRefusal::Expired => "This API key has expired",
            KeyRefusal::Disabled => "This account is disabled",
        }
    }
}

/// Hot path: the key a credential names, through the caches; the database only on a miss,
/// and not at all for an address that has failed too often (`ip`) or a hash known to be
/// unknown. Its status is checked by [`key_refusal`].
pub async fn lookup_key(
    state: &AppState,
    raw: &str,
    ip: Option<IpAddr>,
) -> Result<(KeyHash, Arc<KeyWithAccount>), ApiError> {
    let parsed = key::parse(raw).map_err(|_| ApiError::unauthorized(INVALID_KEY))?;
    let hash = parsed.hash();
    if let Some(entry) = state.caches.key_by_hash(&hash) {
        return Ok((hash, entry));
    }
    if state.caches.is_unknown(&hash) || crate::ratelimit::failures_exhausted(state, ip).await {
        return Err(ApiError::unauthorized(INVALID_KEY));
    }
    let epoch = state.caches.epoch();
    match state.store.find_key_by_hash(&hash).await {
        Ok(found) => {
            let found = Arc::new(state.caches.share_account(found, epoch));
            state.caches.insert_by_hash(hash, found.clone(), epoch);
            Ok((hash, found))
        }
        Err(StoreError::NotFound) => {
            state.caches.remember_unknown(hash);
            Err(ApiError::unauthorized(INVALID_KEY))
        }
        Err(err) => Err(err.into()),
    }
}

/// Hot path for API keys. See the module comment for the order of checks.
pub async fn authenticate_key(
    state: &AppState,
    raw: &str,
    ip: Option<IpAddr>,
) -> Result<Principal, ApiError> {
    let (hash, entry) = lookup_key(state, raw, ip).await?;
    let now = OffsetDateTime::now_utc();
    check_key(&entry, now)?;
    let k = &entry.key;
    state.usage.record(hash, &entry, now);
    Ok(Principal {
        scope: k.scope,
        account_id: k.account_id.clone(),
        user_id: k.created_by.clone(),
        key: Some(entry.clone()),
        user: None,
        token: None,
        oauth: None,
    })
}

/// Whether a found key may be used now.
pub fn key_refusal(entry: &KeyWithAccount, now: OffsetDateTime) -> Option<KeyRefusal> {
    match entry.key.status_at(now) {
        KeyStatus::Active => {}
        KeyStatus::Revoked => return Some(KeyRefusal::Revoked),
        KeyStatus::Expired => return Some(KeyRefusal::Expired),
    }
    if entry
        .account
        .as_ref()
        .is_some_and(|a| a.status != AccountStatus::Active)
    {
        return Some(KeyRefusal::Disabled);
    }
    None
}

fn check_key(entry: &KeyWithAccount, now: OffsetDateTime) -> Result<(), ApiError> {
    match key_refusal(entry, now) {
        None => Ok(()),
        Some(r) => Err(ApiError::unauthorized(r.message())),
    }
}

/// The scope a user's own credentials carry: owners and admins administer, members work.
pub fn user_scope(role: Role) -> Scope {
    match role {
        Role::Owner | Role::Admin => Scope::Admin,
        Role::Member => Scope::Write,
    }
}

/// Hot path for auth tokens: everything but the key or user lookup is CPU only.
pub async fn authenticate_token(state: &AppState, raw: &str) -> Result<Principal, ApiError> {
    let claims = match state.tokens.verify(raw) {
        Ok(claims) => claims,
        // The typ is checked before the signature: trying the other kind costs little.
        Err(TokenError::WrongType) => return authenticate_access_token(state, raw).await,
        Err(_) => return Err(ApiError::unauthorized(INVALID_TOKEN)),
    };
    let now = OffsetDateTime::now_utc();
    let token = Arc::new(TokenInUse {
        raw: raw.to_owned(),
        claims,
    });
    let claims = &token.claims;
    match claims.method {
        AuthMethod::ApiKey => {
            let key_id = claims
                .key_id
                .as_ref()
                .ok_or_else(|| ApiError::unauthorized(INVALID_TOKEN))?;
            let entry = match state.caches.key_by_id(key_id) {
                Some(e) => e,
                None => {
                    let epoch = state.caches.epoch();
                    let found = match state.store.find_key_by_id(key_id).await {
                        Ok(found) => Arc::new(state.caches.share_account(found, epoch)),
                        Err(StoreError::NotFound) => {
                            return Err(ApiError::unauthorized(INVALID_TOKEN))
                        }
                        Err(err) => return Err(err.into()),
                    };
                    state
                        .caches
                        .insert_by_id(key_id.clone(), found.clone(), epoch);
                    found
                }
            };
            check_key(&entry, now).map_err(|_| ApiError::unauthorized(INVALID_TOKEN))?;
            if entry.key.account_id.as_ref() != Some(&claims.account_id) {
                return Err(ApiError::unauthorized(INVALID_TOKEN));
            }
            let k = &entry.key;
            state.usage.record(k.hash, &entry, now);
            Ok(Principal {
                // A key narrowed after the token was minted narrows the token too.
                scope: claims.scope.min(k.scope),
                account_id: Some(claims.account_id.clone()),
                user_id: Some(claims.owner_id.clone()),
                key: Some(entry.clone()),
                user: None,
                token: Some(token.clone()),
                oauth: None,
            })
        }
        AuthMethod::UserAuth => {
            let user = load_user(state, &claims.account_id, &claims.owner_id).await?;
            if user.account.status != AccountStatus::Active {
                return Err(ApiError::unauthorized("This account is disabled"));
            }
            Ok(Principal {
                scope: claims.scope.min(user_scope(user.user.role)),
                account_id: Some(claims.account_id.clone()),
                user_id: Some(claims.owner_id.clone()),
                key: None,
                user: Some(user),
                token: Some(token.clone()),
                oauth: None,
            })
        }
    }
}

/// Hot path for OAuth access tokens: signature and deny-list (no I/O), then the user or the
/// account through the caches. A user's token can never do more than the user: its scope is
/// what was granted, narrowed by the user's current role.
pub async fn authenticate_access_token(state: &AppState, raw: &str) -> Result<Principal, ApiError> {
    let claims = state
        .tokens
        .verify_access(raw)
        .map_err(|_| ApiError::unauthorized(INVALID_TOKEN))?;
    let granted = keygate_core::oauth::ScopeSet::parse(&claims.scope)
        .ok()
        .and_then(|s| s.effective())
        .ok_or_else(|| ApiError::unauthorized(INVALID_TOKEN))?;
    match claims.user_id() {
        Some(user_id) => {
            let user = load_user(state, &claims.account_id, &user_id).await?;
            if user.account.status != AccountStatus::Active {
                return Err(ApiError::unauthorized("This account is disabled"));
            }
            Ok(Principal {
                scope: granted.min(user_scope(user.user.role)),
                account_id: Some(claims.account_id.clone()),
                user_id: Some(user_id),
                key: None,
                user: Some(user),
                token: None,
                oauth: Some(Arc::new(OAuthAccess {
                    claims,
                    account: None,
                })),
            })
        }
        None => {
            let account = load_account(state, &claims.account_id).await?;
            if account.status != AccountStatus::Active {
                return Err(ApiError::unauthorized("This account is disabled"));
            }
            Ok(Principal {
                scope: granted,
                account_id: Some(claims.account_id.clone()),
                user_id: None,
                key: None,
                user: None,
                token: None,
                oauth: Some(Arc::new(OAuthAccess {
                    claims,
                    account: Some(account),
                })),
            })
        }
    }
}

/// An account, through the account cache.
async fn load_account(state: &AppState, id: &AccountId) -> Result<Arc<Account>, ApiError> {
    if let Some(a) = state.caches.account(id) {
        return Ok(a);
    }
    let epoch = state.caches.epoch();
    let account = match state.store.get_account(id).await {
        Ok(a) => Arc::new(a),
        Err(StoreError::NotFound) => return Err(ApiError::unauthorized(INVALID_TOKEN)),
        Err(err) => return Err(err.into()),
    };
    state
        .caches
        .insert_account(id.clone(), account.clone(), epoch);
    Ok(account)
}

/// The user with their account, through the user cache.
pub async fn load_user(
    state: &AppState,
    account: &AccountId,
    id: &UserId,
) -> Result<Arc<UserWithAccount>, ApiError> {
    if let Some(u) = state.caches.user(id) {
        if &u.user.account_id == account {
            return Ok(u);
        }
        return Err(ApiError::unauthorized(INVALID_TOKEN));
    }
    let epoch = state.caches.epoch();
    let user = match state.store.get_user(account, id).await {
        Ok(u) => u,
        Err(StoreError::NotFound) => return Err(ApiError::unauthorized(INVALID_TOKEN)),
        Err(err) => return Err(err.into()),
    };
    let account = match state.store.get_account(account).await {
        Ok(a) => a,
        Err(StoreError::NotFound) => return Err(ApiError::unauthorized(INVALID_TOKEN)),
        Err(err) => return Err(err.into()),
    };
    let entry = Arc::new(UserWithAccount { user, account });
    state.caches.insert_user(id.clone(), entry.clone(), epoch);
    Ok(entry)
}

/// Authenticates a request once and applies its limits and credit cost; the principal is kept
/// in the request so a second extractor does not count the request twice.
async fn authenticate_request(parts: &mut Parts, state: &AppState) -> Result<Principal, ApiError> {
    let ip = Some(super::client::of_parts(parts).addr);
    let p = authenticate(state, &parts.headers, ip).await?;
    let idem = parts
        .headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| (1..=200).contains(&k.len()));
    let (method, path) = (parts.method.as_str(), parts.uri.path());
    let cost = crate::service::credits::cost_of(state, method, path);
    crate::ratelimit::enforce(state, &p, (method, path), cost, idem).await?;
    parts.extensions.insert(p.clone());
    Ok(p)
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
                    None => authenticate_request(parts, state).await?,
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

/// The caller of the verification API: an operator key, or a key holding the `verify`
/// permission (which verifies its own account's keys only). Not rate-limited itself: the call
/// counts against the key it verifies.
pub struct VerifyCaller(pub Principal);

impl FromRequestParts<AppState> for VerifyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ip = Some(super::client::of_parts(parts).addr);
        let p = authenticate(state, &parts.headers, ip).await?;
        let allowed = p.is_operator()
            || (p.token.is_none()
                && p.key
                    .as_ref()
                    .is_some_and(|k| k.key.permissions.iter().any(|x| x == "verify")));
        if !allowed {
            return Err(ApiError::forbidden(
                "Verifying keys needs an operator key or a key with the verify permission",
            ));
        }
        Ok(VerifyCaller(p))
    }
}
