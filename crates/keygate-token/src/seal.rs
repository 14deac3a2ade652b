//! Signing keys at rest: AES-256-GCM under a 32-byte master key that lives outside the database
//! (a file in the data directory, or the environment), so a copy of the database alone cannot
//! mint tokens.
//!
//! Each seal draws a fresh random 96-bit nonce. Keys are sealed once at creation or rotation,
//! so the number of messages under one master key stays far below the 2^32 at which random GCM
//! nonces become a concern. The associated data binds the ciphertext to its kid (and to this
//! purpose), so swapping ciphertexts between rows fails to decrypt, and opening re-derives the
//! kid from the decrypted key and compares it, so the public fields cannot lie about the key.
//!
//! Other small secrets (webhook signing secrets, …) are sealed the same way by
//! [`MasterKey::seal_secret`], into one string whose associated data names its purpose.

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::key::{Algorithm, KeyError, SigningKey};

/// Versioned prefix of the associated data, so these ciphertexts can never be confused with
/// anything else a future Keygate encrypts under the same master key.
const AAD_PREFIX: &str = "keygate/signing-key/v1/";

/// The key-encryption key for signing keys. `Debug` is redacted; it never serialises.
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// 32 bytes from the system CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// Accepts standard or URL-safe base64, padded or not, with surrounding whitespace (a key
    /// file usually ends with a newline). Anything that is not exactly 32 bytes is refused.
    pub fn from_base64(encoded: &str) -> Result<Self, KeyError> {
        let encoded = encoded.trim();
        let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(encoded).ok())
            .ok_or(KeyError::InvalidMasterKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::InvalidMasterKey)?;
        Ok(Self(bytes))
    }

    /// Standard padded base64 (44 characters).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// A 32-byte secret for another purpose, named by `label` (HMAC-SHA256 of the label under
    /// the master key), so one master key can serve several uses without reusing key material.
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.0);
        let tag = aws_lc_rs::hmac::sign(&key, label);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn aead_key(&self) -> Result<LessSafeKey, KeyError> {
        Ok(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0)?))
    }
}

/// A signing key as stored in the database: the private key encrypted, the rest in the clear so
/// the server can publish the JWKS and list keys without the master key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SealedKey {
    pub kid: String,
    pub alg: Algorithm,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The 96-bit AES-GCM nonce, standard base64.
    pub nonce_b64: String,
    /// The PKCS#8 private key encrypted with AES-256-GCM, tag appended, standard base64.
    pub ciphertext_b64: String,
    /// What [`SigningKey::public_jwk`] returned, for the JWKS.
    pub public_jwk: serde_json::Value,
}

impl SigningKey {
    /// Encrypts the private key under `master` for storage.
    pub fn seal(&self, master: &MasterKey) -> Result<SealedKey, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)?;
        let mut in_out = self.pkcs8()?;
        master.aead_key()?.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(associated_data(self.kid())),
            &mut in_out,
        )?;
        Ok(SealedKey {
            kid: self.kid().to_owned(),
            alg: self.alg(),
            created_at: self.created_at(),
            nonce_b64: STANDARD.encode(nonce),
            ciphertext_b64: STANDARD.encode(&in_out),
            public_jwk: self.public_jwk(),
        })
    }
}

impl SealedKey {
    /// Decrypts the private key. A wrong master key, or any change to the kid, nonce or
    /// ciphertext, is [`KeyError::WrongMasterKey`]; never a panic.
    pub fn open(&self, master: &MasterKey) -> Result<SigningKey, KeyError> {
        let nonce = STANDARD
            .decode(&self.nonce_b64)
            .map_err(|_| KeyError::InvalidSealedKey("nonce is not base64"))?;
        let nonce = Nonce::try_assume_unique_for_key(&nonce)
            .map_err(|_| KeyError::InvalidSealedKey("nonce is not 96 bits"))?;
        let mut in_out = STANDARD
            .decode(&self.ciphertext_b64)
            .map_err(|_| KeyError::InvalidSealedKey("ciphertext is not base64"))?;
        let plaintext = master
            .aead_key()?
            .open_in_place(nonce, Aad::from(associated_data(&self.kid)), &mut in_out)
            .map_err(|_| KeyError::WrongMasterKey)?;
        let key = SigningKey::from_pkcs8(self.alg, plaintext, self.created_at)?;
        if key.kid() != self.kid {
            return Err(KeyError::InvalidSealedKey("kid does not match the key"));
        }
        if key.public_jwk() != self.public_jwk {
            return Err(KeyError::InvalidSealedKey(
                "public_jwk does not match the key",
            ));
        }
        Ok(key)
    }
}

fn associated_data(kid: &str) -> Vec<u8> {
    [AAD_PREFIX.as_bytes(), kid.as_bytes()].concat()
}

/// Associated-data prefix for [`MasterKey::seal_secret`]; the purpose follows it.
const SECRET_AAD_PREFIX: &str = "keygate/secret/v1/";
/// Format tag of a sealed secret string.
const SECRET_VERSION: &str = "v1";

impl MasterKey {
    /// Encrypts a small secret (a webhook signing secret, an upstream credential, …) for
    /// storage, as one self-contained string: `v1.<nonce>.<ciphertext and tag>`, both unpadded
    /// URL-safe base64. The associated data is `keygate/secret/v1/<purpose>`, so a value sealed
    /// for one purpose does not open for another, nor as a signing key. Use a fixed purpose per
    /// kind of secret, naming the row it belongs to if swapping between rows must fail too
    /// (`webhook-endpoint/<id>`).
    pub fn seal_secret(&self, purpose: &str, plaintext: &[u8]) -> Result<String, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)?;
        let mut in_out = plaintext.to_vec();
        self.aead_key()?.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(secret_associated_data(purpose)),
            &mut in_out,
        )?;
        Ok(format!(
            "{SECRET_VERSION}.{}.{}",
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(&in_out)
        ))
    }

    /// Opens what [`MasterKey::seal_secret`] returned for the same `purpose`. A malformed
    /// string is [`KeyError::InvalidSealedKey`]; a wrong master key or purpose, or any change to
    /// the string, is [`KeyError::WrongMasterKey`]; never a panic.
    pub fn open_secret(&self, purpose: &str, sealed: &str) -> Result<Vec<u8>, KeyError> {
        let mut parts = sealed.split('.');
        let (Some(version), Some(nonce), Some(ciphertext), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyError::InvalidSealedKey(
                "a sealed secret is v1.<nonce>.<ciphertext>",
            ));
        };
        if version != SECRET_VERSION {
            return Err(KeyError::InvalidSealedKey("unknown sealed secret version"));
        }
        let nonce = URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| KeyError::InvalidSealedKey("nonce is not base64"))?;
        let nonce = Nonce::try_assume_unique_for_key(&nonce)
            .map_err(|_| KeyError::InvalidSealedKey("nonce is not 96 bits"))?;
        let mut in_out = URL_SAFE_NO_PAD
            .decode(ciphertext)
            .map_err(|_| KeyError::InvalidSealedKey("ciphertext is not base64"))?;
        if in_out.len() < AES_256_GCM.tag_len() {
            return Err(KeyError::InvalidSealedKey("ciphertext is too short"));
        }
        let plaintext = self
            .aead_key()?
            .open_in_place(
                nonce,
                Aad::from(secret_associated_data(purpose)),
                &mut in_out,
            )
            .map_err(|_| KeyError::WrongMasterKey)?;
        Ok(plaintext.to_vec())
    }
}

fn secret_associated_data(purpose: &str) -> Vec<u8> {
    [SECRET_AAD_PREFIX.as_bytes(), purpose.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::key;

    fn master() -> MasterKey {
        MasterKey::generate().expect("CSPRNG works")
    }

    #[test]
    fn sealed_keys_open_to_the_same_key() {
        let master = master();
        for alg in [Algorithm::Rs256, Algorithm::EdDsa] {
            let original = key(alg);
            let sealed = original.seal(&master).expect("seal");
            assert_eq!(sealed.kid, original.kid());
            assert_eq!(sealed.alg, alg);
            assert_eq!(sealed.public_jwk, original.public_jwk());

            let json = serde_json::to_string(&sealed).expect("serialise");
            let stored: SealedKey = serde_json::from_str(&json).expect("deserialise");
            let opened = stored.open(&master).expect("open");
            assert_eq!(opened.kid(), original.kid());
            assert_eq!(opened.alg(), alg);
            assert_eq!(opened.created_at(), original.created_at());
            assert!(opened.sign_bytes(b"m").is_ok());
        }
    }

    #[test]
    fn sealed_key_json_never_contains_the_private_key() {
        let original = key(Algorithm::EdDsa);
        let sealed = original.seal(&master()).expect("seal");
        let json = serde_json::to_string(&sealed).expect("serialise");
        let pkcs8 = STANDARD.encode(original.pkcs8().expect("pkcs8"));
        assert!(!json.contains(&pkcs8));
        assert!(json.contains("\"alg\":\"EdDSA\""));
    }

    #[test]
    fn a_wrong_master_key_is_refused_with_a_clear_error() {
        let sealed = key(Algorithm::Rs256).seal(&master()).expect("seal");
        let error = sealed.open(&master()).expect_err("wrong master key");
        assert!(matches!(error, KeyError::WrongMasterKey), "{error:?}");
        assert!(error.to_string().contains("wrong master key"));
    }

    #[test]
    fn a_sealed_key_moved_to_another_kid_does_not_open() {
        let master = master();
        let mut sealed = key(Algorithm::EdDsa).seal(&master).expect("seal");
        sealed.kid = key(Algorithm::EdDsa).kid().to_owned();
        assert!(matches!(
            sealed.open(&master),
            Err(KeyError::WrongMasterKey)
        ));
    }

    #[test]
    fn a_sealed_key_with_a_swapped_public_jwk_does_not_open() {
        let master = master();
        let mut sealed = key(Algorithm::EdDsa).seal(&master).expect("seal");
        sealed.public_jwk = key(Algorithm::EdDsa).public_jwk();
        assert!(matches!(
            sealed.open(&master),
            Err(KeyError::InvalidSealedKey(_))
        ));
    }

    #[test]
    fn corrupted_sealed_fields_are_errors_not_panics() {
        let master = master();
        let sealed = key(Algorithm::EdDsa).seal(&master).expect("seal");
        let mutations: [fn(&mut SealedKey); 5] = [
            |s| s.nonce_b64 = "not base64!".into(),
            |s| s.nonce_b64 = STANDARD.encode([0u8; 8]),
            |s| s.ciphertext_b64 = String::new(),
            |s| s.ciphertext_b64 = STANDARD.encode([7u8; 3]),
            |s| s.alg = Algorithm::Rs256,
        ];
        for mutate in mutations {
            let mut broken = sealed.clone();
            mutate(&mut broken);
            assert!(broken.open(&master).is_err());
        }
    }

    #[test]
    fn master_keys_round_trip_through_base64() {
        let master = master();
        let encoded = master.to_base64();
        assert_eq!(encoded.len(), 44);
        let again = MasterKey::from_base64(&format!("{encoded}\n")).expect("parse");
        assert_eq!(again.0, master.0);
        let url_safe = URL_SAFE_NO_PAD.encode(master.0);
        assert_eq!(
            MasterKey::from_base64(&url_safe).expect("parse").0,
            master.0
        );
    }

    #[test]
    fn master_keys_of_the_wrong_length_or_alphabet_are_refused() {
        for bad in [
            "",
            "c2hvcnQ=",
            "!!!!",
            &STANDARD.encode([1u8; 31]),
            &STANDARD.encode([1u8; 33]),
        ] {
            assert!(matches!(
                MasterKey::from_base64(bad),
                Err(KeyError::InvalidMasterKey)
            ));
        }
    }

    #[test]
    fn sealed_secrets_open_to_the_same_bytes_for_the_same_purpose() {
        let master = master();
        for plaintext in [
            &b""[..],
            b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            &[0u8, 255, 7],
        ] {
            let sealed = master.seal_secret("webhook", plaintext).expect("seal");
            assert!(sealed.starts_with("v1."));
            assert_eq!(sealed.split('.').count(), 3);
            assert_eq!(
                master.open_secret("webhook", &sealed).expect("open"),
                plaintext
            );
        }
    }

    #[test]
    fn sealing_the_same_secret_twice_gives_different_strings_without_the_plaintext() {
        let master = master();
        let secret = b"a webhook secret that must not leak";
        let a = master.seal_secret("webhook", secret).expect("seal");
        let b = master.seal_secret("webhook", secret).expect("seal");
        assert_ne!(a, b);
        for encoded in [STANDARD.encode(secret), URL_SAFE_NO_PAD.encode(secret)] {
            assert!(!a.contains(&encoded));
        }
    }

    #[test]
    fn a_sealed_secret_does_not_open_under_another_purpose_or_master_key() {
        let master = master();
        let sealed = master.seal_secret("webhook", b"secret").expect("seal");
        for purpose in ["", "Webhook", "webhook/", "upstream", "webhoo"] {
            assert!(matches!(
                master.open_secret(purpose, &sealed),
                Err(KeyError::WrongMasterKey)
            ));
        }
        assert!(matches!(
            self::master().open_secret("webhook", &sealed),
            Err(KeyError::WrongMasterKey)
        ));
    }

    #[test]
    fn a_sealed_secret_is_not_interchangeable_with_a_sealed_signing_key() {
        let master = master();
        let signing = key(Algorithm::EdDsa).seal(&master).expect("seal");
        let disguised = format!(
            "v1.{}.{}",
            URL_SAFE_NO_PAD.encode(STANDARD.decode(&signing.nonce_b64).expect("b64")),
            URL_SAFE_NO_PAD.encode(STANDARD.decode(&signing.ciphertext_b64).expect("b64")),
        );
        let purpose = format!("../../signing-key/v1/{}", signing.kid);
        assert!(master.open_secret(&purpose, &disguised).is_err());
        assert!(master.open_secret(&signing.kid, &disguised).is_err());
    }

    #[test]
    fn malformed_or_tampered_sealed_secrets_are_errors_not_panics() {
        let master = master();
        let sealed = master.seal_secret("webhook", b"secret").expect("seal");
        let (_, rest) = sealed.split_once('.').expect("dot");
        let (nonce, ciphertext) = rest.split_once('.').expect("dot");
        let mut flipped = URL_SAFE_NO_PAD.decode(ciphertext).expect("b64");
        flipped[0] ^= 1;
        let flipped = format!("v1.{nonce}.{}", URL_SAFE_NO_PAD.encode(flipped));
        let other_nonce = URL_SAFE_NO_PAD.encode([9u8; NONCE_LEN]);
        let malformed = [
            String::new(),
            "v1".into(),
            "v1..".into(),
            format!("v2.{rest}"),
            format!("{sealed}.extra"),
            format!("v1.{nonce}"),
            format!("v1.!!.{ciphertext}"),
            format!("v1.{}.{ciphertext}", URL_SAFE_NO_PAD.encode([1u8; 8])),
            format!("v1.{nonce}.***"),
            format!("v1.{nonce}.{}", URL_SAFE_NO_PAD.encode([1u8; 15])),
            format!("v1.{other_nonce}.{ciphertext}"),
            flipped,
            "é.é.é".into(),
        ];
        for bad in malformed {
            assert!(master.open_secret("webhook", &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn master_key_debug_is_redacted() {
        let master = master();
        let debug = format!("{master:?}");
        assert_eq!(debug, "MasterKey(<redacted>)");
        assert!(!debug.contains(&master.to_base64()));
    }
}
