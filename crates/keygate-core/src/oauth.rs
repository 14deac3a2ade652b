//! OAuth 2.0's pure rules: scope strings, PKCE (RFC 7636, S256 only), redirect URIs, and the
//! opaque secrets (client secrets, authorization codes, refresh tokens) and their hashes.
//!
//! Every opaque secret is at least 256 random bits, so it is stored as its SHA-256 alone, like
//! API keys: a slow password hash would buy nothing against guessing, and looking one up by its
//! hash needs no per-row salt.

use std::collections::BTreeSet;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::Scope;

/// A set of Keygate scopes as OAuth writes them: space-separated names (`"read write"`).
/// Keygate's scopes are ordered, so what a token may do is its highest member
/// ([`ScopeSet::effective`]); the set is kept as asked, for what the consent page and the
/// token responses show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<Scope>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}: use read, write or admin, separated by spaces")]
pub struct UnknownScope(pub String);

impl ScopeSet {
    /// Parses RFC 6749 §3.3 scope: space-delimited names; repeats are harmless.
    pub fn parse(s: &str) -> Result<Self, UnknownScope> {
        s.split(' ')
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<Scope>()
                    .map_err(|_| UnknownScope(t.chars().take(32).collect()))
            })
            .collect::<Result<BTreeSet<_>, _>>()
            .map(ScopeSet)
    }

    pub fn from_scopes(scopes: impl IntoIterator<Item = Scope>) -> Self {
        ScopeSet(scopes.into_iter().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn is_subset(&self, of: &ScopeSet) -> bool {
        self.0.is_subset(&of.0)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    /// What a credential holding these scopes may do; `None` for the empty set.
    pub fn effective(&self) -> Option<Scope> {
        self.0.iter().next_back().copied()
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(s.as_str())?;
            first = false;
        }
        Ok(())
    }
}

/// Why a PKCE verifier does not match its challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    #[error("code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~]")]
    MalformedVerifier,
    #[error("code_verifier does not match the code_challenge")]
    Mismatch,
}

/// Whether `challenge` is a possible S256 challenge: the unpadded base64url of 32 bytes.
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|bytes| bytes.len() == 32)
}

/// The S256 challenge of a verifier: `BASE64URL(SHA256(ASCII(verifier)))` (RFC 7636 §4.2).
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Checks a verifier against the S256 challenge the authorization request carried, in
/// constant time.
pub fn verify_pkce(verifier: &str, challenge: &str) -> Result<(), PkceError> {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return Err(PkceError::MalformedVerifier);
    }
    let computed = s256_challenge(verifier);
    if bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
        Ok(())
    } else {
        Err(PkceError::Mismatch)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    #[error("must be an absolute https:// URI (http:// only for localhost or 127.0.0.1)")]
    Scheme,
    #[error("must not contain a fragment (#)")]
    Fragment,
    #[error("must have a host and no spaces, controls or user info, at most 2000 characters")]
    Malformed,
}

/// A redirect URI a client may register (RFC 6749 §3.1.2, RFC 9700 §2.1): absolute, https,
/// or http on a loopback host for native apps, no fragment. Requests must then repeat one of
/// the registered URIs exactly, character for character.
pub fn check_redirect_uri(uri: &str) -> Result<(), RedirectUriError> {
    if uri.len() > 2000 || uri.bytes().any(|b| b <= b' ' || b == 0x7f || b >= 0x80) {
        return Err(RedirectUriError::Malformed);
    }
    if uri.contains('#') {
        return Err(RedirectUriError::Fragment);
    }
    let (rest, loopback_only) = if let Some(rest) = uri.strip_prefix("https://") {
        (rest, false)
    } else if let Some(rest) = uri.strip_prefix("http://") {
        (rest, true)
    } else {
        return Err(RedirectUriError::Scheme);
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(RedirectUriError::Malformed);
    }
    if loopback_only {
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().map(|h| format!("[{h}]")),
            None => authority.split(':').next().map(str::to_owned),
        };
        let loopback = matches!(
            host.as_deref(),
            Some("localhost") | Some("127.0.0.1") | Some("[::1]")
        );
        if !loopback {
            return Err(RedirectUriError::Scheme);
        }
    }
    Ok(())
}

/// What an opaque secret is for; each kind has its own visible prefix so that secret scanners
/// (and people) can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    ClientSecret,
    AuthorizationCode,
    RefreshToken,
}

impl SecretKind {
    fn prefix(self) -> &'static str {
        match self {
            SecretKind::ClientSecret => "kgcs_",
            SecretKind::AuthorizationCode => "kgac_",
            SecretKind::RefreshToken => "kgrt_",
        }
    }
}

/// A new opaque secret: its prefix and 256 random bits in base64url. Shown once; only
/// [`secret_hash`] of it is stored.
pub fn generate_secret(kind: SecretKind) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of an opaque secret: lowercase hex of its SHA-256.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `presented` hashes to `stored_hash`, compared in constant time.
pub fn secret_matches(presented: &str, stored_hash: &str) -> bool {
    bool::from(
        secret_hash(presented)
            .as_bytes()
            .ct_eq(stored_hash.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_strings_parse_into_sets_printed_in_order() {
        let s = ScopeSet::parse("write  read write").expect("valid");
        assert_eq!(s.to_string(), "read write");
        assert_eq!(s.effective(), Some(Scope::Write));
        assert!(ScopeSet::parse("").expect("empty is valid").is_empty());
        assert_eq!(
            ScopeSet::parse("read openid"),
            Err(UnknownScope("openid".into()))
        );
        let read = ScopeSet::parse("read").expect("valid");
        assert!(read.is_subset(&s));
        assert!(!s.is_subset(&read));
    }

    #[test]
    fn the_rfc_7636_example_verifier_matches_its_challenge() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(s256_challenge(verifier), challenge);
        assert!(is_s256_challenge(challenge));
        assert_eq!(verify_pkce(verifier, challenge), Ok(()));
        let other = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXx";
        assert_eq!(verify_pkce(other, challenge), Err(PkceError::Mismatch));
        assert_eq!(
            verify_pkce("short", challenge),
            Err(PkceError::MalformedVerifier)
        );
        assert!(!is_s256_challenge("too-short"));
    }

    #[test]
    fn redirect_uris_must_be_https_or_loopback_http_without_fragments() {
        for good in [
            "https://app.example.com/callback",
            "https://app.example.com:8443/cb?x=1",
            "http://localhost:8765/callback",
            "http://127.0.0.1/cb",
            "http://[::1]:9000/cb",
        ] {
            assert_eq!(check_redirect_uri(good), Ok(()), "{good}");
        }
        assert_eq!(
            check_redirect_uri("http://app.example.com/cb"),
            Err(RedirectUriError::Scheme)
        );
        assert_eq!(
            check_redirect_uri("http://localhost.evil.com/cb"),
            Err(RedirectUriError::Scheme)
        );
        assert_eq!(
            check_redirect_uri("myapp://cb"),
            Err(RedirectUriError::Scheme)
        );
        assert_eq!(
            check_redirect_uri("https://app.example.com/cb#frag"),
            Err(RedirectUriError::Fragment)
        );
        assert_eq!(
            check_redirect_uri("https://user@evil.com/cb"),
            Err(RedirectUriError::Malformed)
        );
        assert_eq!(
            check_redirect_uri("https:///cb"),
            Err(RedirectUriError::Malformed)
        );
    }

    #[test]
    fn secrets_are_prefixed_random_and_match_only_their_hash() {
        let a = generate_secret(SecretKind::RefreshToken);
        let b = generate_secret(SecretKind::RefreshToken);
        assert!(a.starts_with("kgrt_") && a.len() == 5 + 43);
        assert_ne!(a, b);
        let h = secret_hash(&a);
        assert!(secret_matches(&a, &h));
        assert!(!secret_matches(&b, &h));
    }
}
