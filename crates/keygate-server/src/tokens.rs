//! Auth tokens: RS256 (or EdDSA) JWTs minted for an API key or a user's credentials, verified
//! offline against the keys published at `/.well-known/jwks.json`.
//!
//! Signing keys live in the database, their private halves sealed with the master key (from the
//! config or environment, else a file created with mode 0600 beside the embedded database). The
//! newest key signs; a rotated-out key keeps verifying until every token it signed has expired,
//! then leaves the JWKS. Nodes learn of a rotation through the revocation feed and reload.
//!
//! A token is refused once it is logged out (`jti` on the deny-list), once its key is revoked or
//! its user deleted: the claims name them, and each request checks them through the caches.

use crate::cache::BoundedCache;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use keygate_store::{SigningKeyRecord, Store};
use keygate_token::{
    AccessClaims, Algorithm, AuthClaims, Jwks, MasterKey, SealedKey, SigningKey, TokenError,
    Verifier,
};
use sha2::Digest as _;
use time::OffsetDateTime;

/// Tokens a verifier accepts from a node whose clock runs slightly ahead.
const CLOCK_LEEWAY: time::Duration = time::Duration::seconds(10);

pub struct TokenService {
    master: MasterKey,
    issuer: String,
    /// The `iss` of OAuth access tokens (the authorization server's issuer identifier).
    oauth_issuer: String,
    pub ttl: Duration,
    algorithm: Algorithm,
    keys: RwLock<Arc<KeySet>>,
    /// Logged-out token ids, each kept until its token would have expired anyway. Not bounded
    /// in size (forgetting one would let a logged-out token work again): moka's, which drops
    /// expired entries by itself.
    denied: moka::sync::Cache<String, ()>,
    /// Tokens whose signature was checked, by the SHA-256 of their text. Emptied when the
    /// signing keys change, so a key that leaves the JWKS stops verifying at once.
    verified: BoundedCache<[u8; 32], Arc<AuthClaims>>,
    /// The same for OAuth access tokens.
    verified_access: BoundedCache<[u8; 32], Arc<AccessClaims>>,
}

/// The signing key in use and the verifier of every key still publishable.
pub struct KeySet {
    pub active: Arc<SigningKey>,
    pub verifier: Verifier,
    /// The same keys, for OAuth access tokens and their issuer.
    pub access_verifier: Verifier,
    pub jwks: Jwks,
}

/// Reads the master key from `configured` (base64), else from `data_dir/master.key`, creating
/// that file (mode 0600) on first start. Two processes starting together on a new data dir (a
/// server and a gateway, say) agree on one key: the file appears whole and only once, and the
/// process that did not write it reads the other's.
pub fn load_master_key(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<MasterKey> {
    if let Some(b64) = configured {
        return MasterKey::from_base64(b64)
            .map_err(|e| anyhow::anyhow!("master_key (KEYGATE_MASTER_KEY): {e}"));
    }
    let path = data_dir.join("master.key");
    let read = |path: &Path| -> anyhow::Result<MasterKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the master key file {}", path.display()))?;
        MasterKey::from_base64(text.trim())
            .map_err(|e| anyhow::anyhow!("the master key file {}: {e}", path.display()))
    };
    if path.exists() {
        return read(&path);
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let key =
        MasterKey::generate().map_err(|e| anyhow::anyhow!("generating the master key: {e}"))?;
    if publish_private_file(&path, &key.to_base64())? {
        tracing::info!(path = %path.display(), "created the master key; back it up with the database");
        Ok(key)
    } else {
        read(&path)
    }
}

/// Writes `contents` to a private temporary file, then links it to `path` if nothing is there:
/// readers never see a half-written file, and an existing one is never replaced. `false` when
/// another process published first.
fn publish_private_file(path: &Path, contents: &str) -> anyhow::Result<bool> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|_| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

impl TokenService {
    pub async fn load(
        store: &dyn Store,
        master: MasterKey,
        issuer: String,
        oauth_issuer: String,
        ttl: Duration,
        algorithm: Algorithm,
    ) -> anyhow::Result<Self> {
        let service = TokenService {
            master,
            issuer,
            oauth_issuer,
            ttl,
            algorithm,
            keys: RwLock::new(Arc::new(KeySet::empty()?)),
            denied: moka::sync::Cache::builder()
                .time_to_live(ttl + Duration::from_secs(60))
                .build(),
            verified: BoundedCache::new(100_000, Duration::from_secs(300)),
            verified_access: BoundedCache::new(100_000, Duration::from_secs(300)),
        };
        if store
            .list_signing_keys()
            .await?
            .iter()
            .all(|k| k.retired_at.is_some())
        {
            service.rotate(store).await?;
        } else {
            service.reload(store).await?;
        }
        Ok(service)
    }

    /// The crossbar-credential pepper: a secret derived from the master key, so a copy of the
    /// database alone cannot be searched for passwords.
    pub fn credential_pepper(&self) -> [u8; 32] {
        self.master.derive(b"keygate/crossbar-credentials/v1")
    }

    /// Seals a secret Keygate must be able to read back (webhook signing secrets) with the
    /// master key; `purpose` is bound into the ciphertext.
    pub fn seal_secret(&self, purpose: &str, plaintext: &[u8]) -> anyhow::Result<String> {
        self.master
            .seal_secret(purpose, plaintext)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn open_secret(&self, purpose: &str, sealed: &str) -> anyhow::Result<Vec<u8>> {
        self.master
            .open_secret(purpose, sealed)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn oauth_issuer(&self) -> &str {
        &self.oauth_issuer
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes a new signing key the active one; the previous ones verify until their tokens
    /// expire.
    pub async fn rotate(&self, store: &dyn Store) -> anyhow::Result<String> {
        let key = tokio::task::spawn_blocking({
            let alg = self.algorithm;
            move || SigningKey::generate(alg)
        })
        .await?
        .map_err(|e| anyhow::anyhow!("generating a signing key: {e}"))?;
        let sealed = key
            .seal(&self.master)
            .map_err(|e| anyhow::anyhow!("sealing the signing key: {e}"))?;
        let now = crate::service::now();
        let record = SigningKeyRecord {
            kid: key.kid().to_owned(),
            alg: key.alg().as_str().to_owned(),
            sealed: serde_json::to_string(&sealed)?,
            created_at: now,
            retired_at: None,
        };
        store.insert_signing_key(&record).await?;
        store.retire_signing_keys_except(key.kid(), now).await?;
        tracing::info!(
            kid = key.kid(),
            alg = key.alg().as_str(),
            "new signing key active"
        );
        self.reload(store).await?;
        // Every node reloads its keys when it reads this.
        store
            .publish_revocation(&keygate_store::Revocation {
                id: 0,
                kind: keygate_store::RevocationKind::SigningKeys,
                subject: record.kid.clone(),
                expires_at: None,
                created_at: now,
            })
            .await?;
        Ok(record.kid)
    }

    /// Re-reads the signing keys: after a rotation here or on another node.
    pub async fn reload(&self, store: &dyn Store) -> anyhow::Result<()> {
        let records = store.list_signing_keys().await?;
        let now = OffsetDateTime::now_utc();
        let keep_until = |r: &SigningKeyRecord| r.retired_at.map(|t| t + self.ttl + CLOCK_LEEWAY);
        let mut active: Option<(OffsetDateTime, Arc<SigningKey>)> = None;
        let mut verifier = Verifier::new(self.issuer.clone()).with_leeway(CLOCK_LEEWAY);
        let mut access_verifier =
            Verifier::new(self.oauth_issuer.clone()).with_leeway(CLOCK_LEEWAY);
        let mut jwks = Vec::new();
        for r in &records {
            if keep_until(r).is_some_and(|t| t <= now) {
                continue;
            }
            let sealed: SealedKey =
                serde_json::from_str(&r.sealed).context("a stored signing key is unreadable")?;
            for v in [&mut verifier, &mut access_verifier] {
                v.insert_jwk(&sealed.public_jwk)
                    .map_err(|e| anyhow::anyhow!("signing key {}: {e}", r.kid))?;
            }
            jwks.push(sealed.public_jwk.clone());
            if r.retired_at.is_none() && active.as_ref().is_none_or(|(t, _)| r.created_at > *t) {
                let key = sealed.open(&self.master).map_err(|e| {
                    anyhow::anyhow!(
                        "signing key {}: {e} (is this the master key the keys were made with?)",
                        r.kid
                    )
                })?;
                active = Some((r.created_at, Arc::new(key)));
            }
        }
        let (_, active) = active.context("no active signing key")?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(KeySet {
            active,
            verifier,
            access_verifier,
            jwks: Jwks::from(jwks),
        });
        self.verified.invalidate_all();
        self.verified_access.invalidate_all();
        Ok(())
    }

    pub fn sign(&self, claims: &AuthClaims) -> anyhow::Result<String> {
        self.current()
            .active
            .sign(claims)
            .map_err(|e| anyhow::anyhow!("signing a token: {e}"))
    }

    /// Signature, issuer, expiry and the deny-list. What the claims point at (key, user) is
    /// checked by the caller.
    ///
    /// Hot path. A signature check costs ~15 µs for RS256, so a verified token is remembered
    /// by the SHA-256 of its text: a client that sends the same token on every request pays
    /// for one verification. Expiry and the deny-list are still checked on every use.
    pub fn verify(&self, token: &str) -> Result<Arc<AuthClaims>, TokenError> {
        let now = OffsetDateTime::now_utc();
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let claims = match self.verified.get(&digest) {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.current().verifier.verify::<AuthClaims>(token, now)?);
                self.verified.insert(digest, claims.clone());
                claims
            }
        };
        if claims.exp <= now.unix_timestamp() || self.denied.contains_key(&claims.jti) {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Signs an OAuth access token (typ `at+jwt`) with the active key.
    pub fn sign_access(&self, claims: &AccessClaims) -> anyhow::Result<String> {
        self.current()
            .active
            .sign(claims)
            .map_err(|e| anyhow::anyhow!("signing an access token: {e}"))
    }

    /// [`TokenService::verify`] for OAuth access tokens: the same keys, cache and deny-list,
    /// the OAuth issuer and typ `at+jwt`. Hot path.
    pub fn verify_access(&self, token: &str) -> Result<Arc<AccessClaims>, TokenError> {
        let now = OffsetDateTime::now_utc();
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let claims = match self.verified_access.get(&digest) {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(
                    self.current()
                        .access_verifier
                        .verify::<AccessClaims>(token, now)?,
                );
                self.verified_access.insert(digest, claims.clone());
                claims
            }
        };
        if claims.exp <= now.unix_timestamp() || self.denied.contains_key(&claims.jti) {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    pub fn deny(&self, jti: &str) {
        self.denied.insert(jti.to_owned(), ());
    }
}

impl KeySet {
    fn empty() -> anyhow::Result<Self> {
        // A placeholder until the first load; never used to sign.
        let key = SigningKey::generate(Algorithm::EdDsa).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(KeySet {
            active: Arc::new(key),
            verifier: Verifier::new(""),
            access_verifier: Verifier::new(""),
            jwks: Jwks::from(Vec::new()),
        })
    }
}

/// Whether a credential has the shape of a JWT rather than an API key.
pub fn looks_like_jwt(credential: &str) -> bool {
    credential.starts_with("eyJ") && credential.bytes().filter(|&b| b == b'.').count() == 2
}

/// A token just minted, with its claims for the answer.
pub struct IssuedToken {
    pub token: String,
    pub claims: keygate_token::AuthClaims,
}

/// Mints a token for an API key the caller just authenticated with. Operator keys, which
/// belong to no account, and tokens themselves cannot be exchanged.
pub fn issue_for_key(
    state: &crate::state::AppState,
    who: &crate::http::auth::Principal,
) -> Result<IssuedToken, crate::http::ApiError> {
    use crate::http::ApiError;
    if who.token.is_some() {
        return Err(ApiError::invalid(
            "Exchange an API key for a token, not a token",
        ));
    }
    let key = who
        .key
        .as_ref()
        .ok_or_else(|| ApiError::unauthorized(crate::http::auth::INVALID_KEY))?;
    let account_id = key.key.account_id.clone().ok_or_else(|| {
        ApiError::forbidden("Operator keys act across accounts and cannot be exchanged for a token")
    })?;
    let owner_id =
        key.key.created_by.clone().ok_or_else(|| {
            ApiError::forbidden("This key has no owner user to issue a token for")
        })?;
    issue(
        state,
        keygate_token::AuthMethod::ApiKey,
        account_id,
        owner_id,
        Some(key.key.id.clone()),
        key.key.scope,
    )
}

pub fn issue(
    state: &crate::state::AppState,
    method: keygate_token::AuthMethod,
    account_id: keygate_core::AccountId,
    owner_id: keygate_core::UserId,
    key_id: Option<keygate_core::KeyId>,
    scope: keygate_core::Scope,
) -> Result<IssuedToken, crate::http::ApiError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = keygate_token::AuthClaims {
        iss: state.tokens.issuer().to_owned(),
        sub: Some(owner_id.to_string()),
        account_id,
        owner_id,
        method,
        key_id,
        scope,
        jti: format!("tok_{}", uuid::Uuid::new_v4().simple()),
        iat: now,
        exp: now + state.tokens.ttl.as_secs() as i64,
    };
    let token = state.tokens.sign(&claims)?;
    Ok(IssuedToken { token, claims })
}

/// Logs a token out on every node: its id is denied until it would have expired.
pub async fn revoke_token(
    state: &crate::state::AppState,
    claims: &keygate_token::AuthClaims,
) -> Result<(), crate::http::ApiError> {
    let expires = OffsetDateTime::from_unix_timestamp(claims.exp)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    crate::revocation::publish(
        state,
        keygate_store::RevocationKind::Token,
        claims.jti.clone(),
        Some(expires),
    )
    .await?;
    use crate::service::audit::{self, action, AuditEvent};
    let event = AuditEvent::new(action::TOKEN_REVOKED, "token", &claims.jti)
        .account(Some(&claims.account_id));
    audit::record(state, event).await;
    Ok(())
}

#[cfg(test)]
mod master_key_tests {
    use super::*;

    #[test]
    fn processes_starting_together_agree_on_one_master_key() {
        let dir = std::env::temp_dir().join(format!("kg-master-{}", uuid::Uuid::new_v4().simple()));
        let keys: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_master_key(None, &dir).expect("key").to_base64()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert!(
            keys.windows(2).all(|w| w[0] == w[1]),
            "every starter got the same key"
        );
        assert_eq!(
            load_master_key(None, &dir).expect("reload").to_base64(),
            keys[0]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("master.key"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
