//! Keygate's auth-token cryptography, with no I/O: the signing keys, their encryption at rest,
//! compact JWS (RFC 7515) signing and verification, the claims Keygate issues, and the JWKS that
//! publishes the public halves.
//!
//! The server owns storage and HTTP; this crate owns every decision that could make a token
//! forgeable or a private key readable, so those decisions are unit-tested in one place:
//!
//! - a [`SigningKey`] is generated here and leaves this crate only as a [`SealedKey`]
//!   (AES-256-GCM under a [`MasterKey`]) or as its public JWK;
//! - a token is signed by [`SigningKey::sign`] and accepted only by [`Verifier::verify`], which
//!   knows public keys only, pins each key to one algorithm, and always checks expiry and the
//!   issuer, because the claims type must implement [`Claims`] to be verified at all.
//!
//! We write compact JWS ourselves rather than use a JWT library: the format is three base64url
//! segments, and owning it lets us refuse `alg: none`, algorithm confusion and oversized tokens
//! before any parsing or cryptography, with one small error enum that never echoes the token.

mod claims;
mod jwk;
mod jws;
mod key;
mod seal;

pub use claims::{AccessClaims, AuthClaims, AuthMethod};
pub use jwk::Jwks;
pub use jws::{Claims, TokenError, TokenType, Verifier, MAX_TOKEN_LEN};
pub use key::{Algorithm, KeyError, SigningKey};
pub use seal::{MasterKey, SealedKey};

#[cfg(test)]
mod sign_rate;

#[cfg(test)]
mod test_support {
    use crate::{Algorithm, SigningKey};

    pub(crate) fn key(alg: Algorithm) -> SigningKey {
        SigningKey::generate(alg).expect("key generation works")
    }
}
