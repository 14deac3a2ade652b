//! Password verifiers. Passwords are hashed with Argon2id. Crossbar's `user_auth` sends the hex
//! MD5 (or SHA-1) of `"username:password"` instead of the password, and no username: the
//! server must find the user by that digest. A salted hash cannot be searched, so we keep an
//! HMAC of each digest under a pepper derived from the master key (never the digest itself):
//! an index finds the user, and a copy of the database without the master key reveals nothing
//! to search. Usernames are lower-cased before digesting, which makes them case-insensitive as
//! Crossbar clients expect.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use aws_lc_rs::hmac;
use keygate_store::{CredentialDigest, PasswordVerifiers};
use md5::Digest as _;

use crate::http::ApiError;

pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 256;

fn hash(secret: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("hashing a password: {e}")))
}

/// Constant-time verification against a stored PHC string; a malformed record never matches.
pub fn matches(phc: &str, candidate: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(candidate.as_bytes(), &h)
            .is_ok()
    })
}

/// Spends the time of one verification when there is no user to verify against, so that how
/// long a failed login takes does not tell whether the address has an account. Never matches.
pub fn matches_nobody(candidate: &str) {
    static NOBODY: std::sync::LazyLock<Option<String>> =
        std::sync::LazyLock::new(|| hash("a password of nobody at all").ok());
    if let Some(phc) = NOBODY.as_deref() {
        let _ = matches(phc, candidate);
    }
}

pub fn crossbar_md5(username: &str, password: &str) -> String {
    hex::encode(md5::Md5::digest(format!(
        "{}:{password}",
        username.to_lowercase()
    )))
}

pub fn crossbar_sha1(username: &str, password: &str) -> String {
    hex::encode(sha1::Sha1::digest(format!(
        "{}:{password}",
        username.to_lowercase()
    )))
}

pub fn validate(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(ApiError::invalid_field(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if n > MAX_PASSWORD_LEN {
        return Err(ApiError::invalid_field(
            "password",
            format!("must be at most {MAX_PASSWORD_LEN} characters"),
        ));
    }
    Ok(())
}

/// The value stored for, and searched by, a Crossbar credential digest (lower-case hex).
pub fn credential_lookup(pepper: &[u8; 32], digest: CredentialDigest, hex_digest: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, pepper);
    let label: &[u8] = match digest {
        CredentialDigest::Md5 => b"md5:",
        CredentialDigest::Sha1 => b"sha1:",
    };
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(label);
    ctx.update(hex_digest.to_ascii_lowercase().as_bytes());
    hex::encode(ctx.sign().as_ref())
}

/// All three verifiers for a username and password. Argon2 is deliberately slow, so this runs
/// on the blocking pool.
pub async fn verifiers_for(
    pepper: [u8; 32],
    username: &str,
    password: &str,
) -> Result<PasswordVerifiers, ApiError> {
    validate(password)?;
    let (username, password) = (username.to_owned(), password.to_owned());
    tokio::task::spawn_blocking(move || {
        Ok(PasswordVerifiers {
            password: Some(hash(&password)?),
            md5: Some(credential_lookup(
                &pepper,
                CredentialDigest::Md5,
                &crossbar_md5(&username, &password),
            )),
            sha1: Some(credential_lookup(
                &pepper,
                CredentialDigest::Sha1,
                &crossbar_sha1(&username, &password),
            )),
        })
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("password hashing task: {e}")))?
}
