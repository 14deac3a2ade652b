//! OAuth 2.0 storage: clients, authorization codes, grants (refresh-token families), the access
//! tokens issued under them, and users' consents.
//!
//! Every secret is stored as its SHA-256 (see `keygate_core::oauth`). The two rules that make
//! stolen credentials short-lived are enforced here, atomically, so that two nodes racing on
//! the same code or refresh token cannot both win:
//!
//! - an authorization code is redeemed once: [`OAuthStore::redeem_authorization_code`] marks it
//!   used and starts its grant in one transaction; a second redemption finds it used, and the
//!   caller revokes the grant the first one started;
//! - a refresh token is used once: [`OAuthStore::rotate_refresh_token`] marks it used and stores
//!   its successor in one transaction; presenting a used one revokes the whole grant.
//!
//! Revoking a grant returns the ids (`jti`) of its access tokens that have not expired, for the
//! caller to put on the revocation feed: access tokens are JWTs checked without the database.

use async_trait::async_trait;
use keygate_core::{AccountId, ClientId, GrantId, UserId};
use time::OffsetDateTime;

use crate::{Page, PageRequest, StoreResult};

#[derive(Clone, Debug, PartialEq)]
pub struct OAuthClient {
    pub id: ClientId,
    pub account_id: AccountId,
    pub name: String,
    /// Registered redirect URIs; an authorization request must name one exactly.
    pub redirect_uris: Vec<String>,
    /// The most the client may ask for: space-separated Keygate scopes (`read write`).
    pub scope: String,
    /// Confidential clients authenticate with their secret; public ones (browser and native
    /// apps) have none and must use PKCE.
    pub confidential: bool,
    /// SHA-256 (hex) of the client secret; `None` for a public client.
    pub secret_hash: Option<String>,
    pub created_by: Option<UserId>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// An authorization code, bound to everything the token request must repeat.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthorizationCode {
    /// SHA-256 (hex) of the code.
    pub code_hash: String,
    pub client_id: ClientId,
    pub account_id: AccountId,
    pub user_id: UserId,
    pub redirect_uri: String,
    pub scope: String,
    /// The PKCE S256 challenge; `None` when a confidential client sent none.
    pub code_challenge: Option<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// When it was redeemed; a second redemption is an attack (or a bug) and revokes `grant_id`.
    pub used_at: Option<OffsetDateTime>,
    /// The grant its redemption started.
    pub grant_id: Option<GrantId>,
}

/// What one authorization started: the refresh-token family and the access tokens under it.
#[derive(Clone, Debug, PartialEq)]
pub struct OAuthGrant {
    pub id: GrantId,
    pub client_id: ClientId,
    pub account_id: AccountId,
    pub user_id: UserId,
    pub scope: String,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RefreshToken {
    /// SHA-256 (hex) of the token.
    pub token_hash: String,
    pub grant_id: GrantId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// When it was exchanged for its successor.
    pub used_at: Option<OffsetDateTime>,
}

/// A refresh token with the grant it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct RefreshTokenWithGrant {
    pub token: RefreshToken,
    pub grant: OAuthGrant,
}

/// An access token as issued: enough to deny it when its grant or client goes.
#[derive(Clone, Debug, PartialEq)]
pub struct IssuedAccessToken {
    pub jti: String,
    pub client_id: ClientId,
    /// `None` for client credentials, which have no grant.
    pub grant_id: Option<GrantId>,
    pub expires_at: OffsetDateTime,
}

/// A user's standing permission for a client to act with some scopes.
#[derive(Clone, Debug, PartialEq)]
pub struct OAuthConsent {
    pub account_id: AccountId,
    pub user_id: UserId,
    pub client_id: ClientId,
    pub scope: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[async_trait]
pub trait OAuthStore: Send + Sync {
    async fn create_oauth_client(&self, client: &OAuthClient) -> StoreResult<()>;
    /// `account` `None`: any account's (the token endpoint, which authenticates the client).
    async fn get_oauth_client(
        &self,
        account: Option<&AccountId>,
        id: &ClientId,
    ) -> StoreResult<OAuthClient>;
    async fn list_oauth_clients(
        &self,
        account: &AccountId,
        page: &PageRequest,
    ) -> StoreResult<Page<OAuthClient>>;
    /// Writes name, redirect URIs, scope, secret hash and `updated_at`.
    async fn update_oauth_client(&self, client: &OAuthClient) -> StoreResult<()>;
    /// Deletes the client with its codes, grants, tokens and consents; returns its access
    /// tokens unexpired at `now`, to deny.
    async fn delete_oauth_client(
        &self,
        account: &AccountId,
        id: &ClientId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<IssuedAccessToken>>;

    async fn create_authorization_code(&self, code: &AuthorizationCode) -> StoreResult<()>;
    async fn get_authorization_code(&self, code_hash: &str) -> StoreResult<AuthorizationCode>;
    /// In one transaction: marks the code used at `grant.created_at` and records `grant`, its
    /// first refresh token (if any) and its first access token. `false`, with nothing written,
    /// when the code was already used.
    async fn redeem_authorization_code(
        &self,
        code_hash: &str,
        grant: &OAuthGrant,
        refresh: Option<&RefreshToken>,
        access: &IssuedAccessToken,
    ) -> StoreResult<bool>;

    async fn get_refresh_token(&self, token_hash: &str) -> StoreResult<RefreshTokenWithGrant>;
    /// In one transaction: marks `old_hash` used at `next.created_at` and records its successor
    /// and the access token issued with it. `false`, with nothing written, when `old_hash` was
    /// used already or its grant is revoked.
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        next: &RefreshToken,
        access: &IssuedAccessToken,
    ) -> StoreResult<bool>;
    /// Records an access token issued outside a grant rotation (client credentials).
    async fn record_access_token(&self, access: &IssuedAccessToken) -> StoreResult<()>;
    /// Revokes a grant: no refresh token of it works any more. Returns its access tokens
    /// unexpired at `now` (also when it was revoked already).
    async fn revoke_oauth_grant(
        &self,
        id: &GrantId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<IssuedAccessToken>>;

    /// Creates or widens a user's consent to a client (the scope given replaces the stored one).
    async fn upsert_oauth_consent(&self, consent: &OAuthConsent) -> StoreResult<()>;
    async fn get_oauth_consent(
        &self,
        user: &UserId,
        client: &ClientId,
    ) -> StoreResult<OAuthConsent>;
    /// A user's consents, oldest first.
    async fn list_oauth_consents(&self, user: &UserId) -> StoreResult<Vec<OAuthConsent>>;
    /// Deletes the consent and revokes every grant of that user to that client; returns their
    /// access tokens unexpired at `now`. `NotFound` when there was no consent.
    async fn delete_oauth_consent(
        &self,
        user: &UserId,
        client: &ClientId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<IssuedAccessToken>>;
}
