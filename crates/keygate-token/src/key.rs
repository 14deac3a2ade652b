//! Signing keys: generation, the key id, raw signing and PKCS#8 export for sealing.
//!
//! RS256 over RSA-2048 is the default because every JWT library verifies it and the Crossbar
//! tokens in the seeds are RS256; EdDSA (Ed25519) is offered because it signs far faster and
//! its keys are tiny. The key id is the RFC 7638 JWK thumbprint, so it is derived from the
//! public key alone: the same key always gets the same kid, on every node, with nothing stored.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest;
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    Ed25519KeyPair, KeyPair as _, RsaKeyPair, RsaPublicKeyComponents, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A JWS algorithm Keygate issues. Anything else in a token header is refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 over an RSA-2048 key.
    #[default]
    #[serde(rename = "RS256")]
    Rs256,
    /// Ed25519 (RFC 8037).
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl Algorithm {
    /// The JWS `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::EdDsa => "EdDSA",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;

    /// Exact JWS names only (`RS256`, `EdDSA`): a token header is matched the same way.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RS256" => Ok(Algorithm::Rs256),
            "EdDSA" => Ok(Algorithm::EdDsa),
            _ => Err(KeyError::UnsupportedAlgorithm),
        }
    }
}

/// Everything that can go wrong with key material. These are operator or server faults (a 500
/// or a refusal to start), unlike [`crate::TokenError`], which is a client's bad token.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the cryptographic library failed")]
    Crypto,
    #[error("unsupported signing algorithm (expected RS256 or EdDSA)")]
    UnsupportedAlgorithm,
    #[error("the master key must be 32 bytes, base64-encoded")]
    InvalidMasterKey,
    #[error("the signing key could not be decrypted: wrong master key or corrupted data")]
    WrongMasterKey,
    #[error("invalid sealed key: {0}")]
    InvalidSealedKey(&'static str),
    #[error("invalid JWK: {0}")]
    InvalidJwk(&'static str),
    #[error("claims could not be serialised: {0}")]
    Claims(#[from] serde_json::Error),
}

impl From<aws_lc_rs::error::Unspecified> for KeyError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        KeyError::Crypto
    }
}

pub(crate) enum KeyPair {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private signing key with its algorithm, key id and creation time.
///
/// It is deliberately neither `Clone` nor `Serialize`: share it behind an `Arc`, and store it
/// only through [`SigningKey::seal`]. `Debug` shows the kid, never key material.
pub struct SigningKey {
    alg: Algorithm,
    kid: String,
    created_at: OffsetDateTime,
    pub(crate) pair: KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key. RSA-2048 generation takes tens to hundreds of milliseconds; call it at
    /// first start and on rotation, not per request.
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let pair = match alg {
            Algorithm::Rs256 => KeyPair::Rsa(RsaKeyPair::generate(KeySize::Rsa2048)?),
            Algorithm::EdDsa => KeyPair::Ed25519(Ed25519KeyPair::generate()?),
        };
        let now = OffsetDateTime::now_utc();
        let created_at = now.replace_nanosecond(0).unwrap_or(now);
        Ok(Self::from_parts(alg, pair, created_at))
    }

    fn from_parts(alg: Algorithm, pair: KeyPair, created_at: OffsetDateTime) -> Self {
        let kid = thumbprint(&pair);
        Self {
            alg,
            kid,
            created_at,
            pair,
        }
    }

    /// Rebuilds a key from the PKCS#8 document [`SigningKey::pkcs8`] produced.
    pub(crate) fn from_pkcs8(
        alg: Algorithm,
        der: &[u8],
        created_at: OffsetDateTime,
    ) -> Result<Self, KeyError> {
        let pair = match alg {
            Algorithm::Rs256 => KeyPair::Rsa(
                RsaKeyPair::from_pkcs8(der)
                    .map_err(|_| KeyError::InvalidSealedKey("not an RSA PKCS#8 key"))?,
            ),
            Algorithm::EdDsa => KeyPair::Ed25519(
                Ed25519KeyPair::from_pkcs8(der)
                    .map_err(|_| KeyError::InvalidSealedKey("not an Ed25519 PKCS#8 key"))?,
            ),
        };
        if let KeyPair::Rsa(rsa) = &pair {
            if rsa.public_modulus_len() < 256 {
                return Err(KeyError::InvalidSealedKey("RSA key shorter than 2048 bits"));
            }
        }
        Ok(Self::from_parts(alg, pair, created_at))
    }

    /// The private key as PKCS#8 DER (v1 for RSA, v2 with the public key for Ed25519).
    pub(crate) fn pkcs8(&self) -> Result<Vec<u8>, KeyError> {
        Ok(match &self.pair {
            KeyPair::Rsa(rsa) => AsDer::<Pkcs8V1Der>::as_der(rsa)?.as_ref().to_vec(),
            KeyPair::Ed25519(ed) => ed.to_pkcs8()?.as_ref().to_vec(),
        })
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url), used as the JWS `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }

    /// The public half as a JWK, as published in `/.well-known/jwks.json`: for RS256
    /// `{kty: RSA, n, e, alg, use: sig, kid}`, for EdDSA `{kty: OKP, crv: Ed25519, x, alg,
    /// use: sig, kid}`. Integers are big-endian base64url without padding or leading zeros.
    pub fn public_jwk(&self) -> serde_json::Value {
        let mut jwk = serde_json::Map::new();
        for (name, value) in public_members(&self.pair) {
            jwk.insert(name.to_owned(), value.into());
        }
        jwk.insert("alg".to_owned(), self.alg.as_str().into());
        jwk.insert("use".to_owned(), "sig".into());
        jwk.insert("kid".to_owned(), self.kid.clone().into());
        serde_json::Value::Object(jwk)
    }

    /// Signs `message` with this key's algorithm. Hot path of token issuance: no allocation
    /// beyond the signature itself.
    pub(crate) fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.pair {
            KeyPair::Rsa(rsa) => {
                let mut signature = vec![0; rsa.public_modulus_len()];
                // aws-lc-rs ignores the RNG for PKCS#1 v1.5; constructing it is free.
                rsa.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )?;
                Ok(signature)
            }
            KeyPair::Ed25519(ed) => Ok(ed.try_sign(message)?.as_ref().to_vec()),
        }
    }
}

/// The required public members of a JWK (RFC 7518 §6, RFC 8037 §2), in the lexicographic
/// order RFC 7638 needs for the thumbprint.
fn public_members(pair: &KeyPair) -> Vec<(&'static str, String)> {
    match pair {
        KeyPair::Rsa(rsa) => {
            let components = RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
            vec![
                (
                    "e",
                    URL_SAFE_NO_PAD.encode(strip_leading_zeros(&components.e)),
                ),
                ("kty", "RSA".to_owned()),
                (
                    "n",
                    URL_SAFE_NO_PAD.encode(strip_leading_zeros(&components.n)),
                ),
            ]
        }
        KeyPair::Ed25519(ed) => vec![
            ("crv", "Ed25519".to_owned()),
            ("kty", "OKP".to_owned()),
            ("x", URL_SAFE_NO_PAD.encode(ed.public_key().as_ref())),
        ],
    }
}

/// aws-lc-rs already returns minimal big-endian integers; this keeps the JWK correct even if
/// that ever changed, since RFC 7518 forbids leading zero octets in `n` and `e`.
fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[first..]
}

/// RFC 7638: SHA-256 over the required members as compact JSON with sorted keys. The values are
/// base64url or fixed names, so they need no JSON escaping.
fn thumbprint(pair: &KeyPair) -> String {
    let members: Vec<String> = public_members(pair)
        .into_iter()
        .map(|(name, value)| format!("\"{name}\":\"{value}\""))
        .collect();
    let canonical = format!("{{{}}}", members.join(","));
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::key;

    #[test]
    fn rsa_jwk_has_unpadded_base64url_n_and_e() {
        let key = key(Algorithm::Rs256);
        let jwk = key.public_jwk();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RS256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(jwk["e"], "AQAB");
        let n = jwk["n"].as_str().expect("n is a string");
        assert!(!n.contains('=') && !n.contains('+') && !n.contains('/'));
        let n = URL_SAFE_NO_PAD.decode(n).expect("n is base64url");
        assert_eq!(n.len(), 256, "a 2048-bit modulus has no leading zero octet");
        assert_ne!(n[0], 0);
    }

    #[test]
    fn ed25519_jwk_is_an_okp_key_with_a_32_byte_x() {
        let key = key(Algorithm::EdDsa);
        let jwk = key.public_jwk();
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        let x = URL_SAFE_NO_PAD
            .decode(jwk["x"].as_str().expect("x is a string"))
            .expect("x is base64url");
        assert_eq!(x.len(), 32);
    }

    #[test]
    fn kid_is_the_rfc_7638_thumbprint() {
        // The RSA example of RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let canonical = format!(r#"{{"e":"AQAB","kty":"RSA","n":"{n}"}}"#);
        let digest = digest::digest(&digest::SHA256, canonical.as_bytes());
        assert_eq!(
            URL_SAFE_NO_PAD.encode(digest),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );

        // And our keys use exactly that construction.
        let key = key(Algorithm::Rs256);
        let jwk = key.public_jwk();
        let canonical = format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            jwk["e"].as_str().expect("e is a string"),
            jwk["n"].as_str().expect("n is a string")
        );
        let digest = digest::digest(&digest::SHA256, canonical.as_bytes());
        assert_eq!(URL_SAFE_NO_PAD.encode(digest), key.kid());
    }

    #[test]
    fn kid_is_stable_for_the_same_key() {
        for alg in [Algorithm::Rs256, Algorithm::EdDsa] {
            let key = key(alg);
            let again = SigningKey::from_pkcs8(
                alg,
                &key.pkcs8().expect("exports PKCS#8"),
                key.created_at(),
            )
            .expect("PKCS#8 parses back");
            assert_eq!(key.kid(), again.kid());
            assert_eq!(key.public_jwk(), again.public_jwk());
            assert_ne!(key.kid(), crate::test_support::key(alg).kid());
        }
    }

    #[test]
    fn debug_output_shows_no_key_material() {
        let key = key(Algorithm::EdDsa);
        let debug = format!("{key:?}");
        assert!(debug.contains(key.kid()));
        assert!(!debug.contains("pair"));
    }

    #[test]
    fn algorithm_names_are_the_jws_names() {
        assert_eq!(
            "RS256".parse::<Algorithm>().expect("a JWS name"),
            Algorithm::Rs256
        );
        assert_eq!(
            "EdDSA".parse::<Algorithm>().expect("a JWS name"),
            Algorithm::EdDsa
        );
        assert!("none".parse::<Algorithm>().is_err());
        assert!("rs256".parse::<Algorithm>().is_err());
        assert_eq!(
            serde_json::to_string(&Algorithm::EdDsa).expect("serialise"),
            r#""EdDSA""#
        );
        assert_eq!(Algorithm::default(), Algorithm::Rs256);
    }
}
