//! The API key format: `<prefix>_<env>_<random><checksum>`.
//!
//! - `prefix` is chosen per deployment (`ak`, `ap`, `sk`, …): lowercase letters and digits;
//! - `env` is `live` or `test`;
//! - `random` is 32 base62 characters from the OS generator (about 190 bits);
//! - `checksum` is the last 6 characters: CRC32 of everything before it, in base62.
//!
//! The checksum lets us refuse a mistyped or invented key before touching the cache or the
//! database, and gives secret scanners a shape with few false positives. Keys are stored only as
//! the SHA-256 of the whole key: they are high-entropy, so a slow password hash would add cost
//! on every request and no safety.

use std::fmt;

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::base62;

/// Characters of the random part. 62^32 ≈ 2^190.5, above the 160 bits the design asks for.
pub const RANDOM_LEN: usize = 32;
pub const CHECKSUM_LEN: usize = 6;
/// Longest key we will even look at; longer credentials are refused without hashing them.
pub const MAX_KEY_LEN: usize = 16 + 1 + 4 + 1 + RANDOM_LEN + CHECKSUM_LEN;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(Environment::Live),
            "test" => Some(Environment::Test),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFormatError {
    #[error("a key prefix is 1 to 16 lowercase letters or digits")]
    BadPrefix,
    #[error("the credential is not shaped like an API key")]
    BadShape,
    #[error("the credential's checksum does not match")]
    BadChecksum,
}

/// Checks a deployment's configured prefix.
pub fn validate_prefix(prefix: &str) -> Result<(), KeyFormatError> {
    let ok = (1..=16).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(KeyFormatError::BadPrefix)
    }
}

/// A freshly generated key. The plaintext lives only here, long enough to be shown once; its
/// `Debug` output is redacted so it cannot reach a log by accident.
pub struct GeneratedKey {
    plaintext: String,
    pub hash: KeyHash,
    pub start: String,
    pub last4: String,
}

impl GeneratedKey {
    pub fn expose_plaintext(&self) -> &str {
        &self.plaintext
    }

    pub fn into_plaintext(self) -> String {
        self.plaintext
    }
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GeneratedKey({}…{})", self.start, self.last4)
    }
}

pub fn generate(prefix: &str, env: Environment) -> Result<GeneratedKey, KeyFormatError> {
    validate_prefix(prefix)?;
    let mut rng = rand::rng();
    let mut key = String::with_capacity(prefix.len() + 6 + RANDOM_LEN + CHECKSUM_LEN);
    key.push_str(prefix);
    key.push('_');
    key.push_str(env.as_str());
    key.push('_');
    for _ in 0..RANDOM_LEN {
        key.push(base62::ALPHABET[rng.random_range(0..62)] as char);
    }
    let crc = crc32fast::hash(key.as_bytes());
    base62::encode_fixed(crc as u64, CHECKSUM_LEN, &mut key);
    let parsed = parse(&key)?;
    Ok(GeneratedKey {
        hash: parsed.hash(),
        start: parsed.display_start(),
        last4: parsed.last4().to_owned(),
        plaintext: key,
    })
}

/// A credential that has the shape of a key and a matching checksum. It borrows the request's
/// header: parsing allocates nothing (hot path).
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    whole: &'a str,
    prefix: &'a str,
    env: Environment,
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParsedKey({}…{})", self.display_start(), self.last4())
    }
}

/// Shape and checksum check; no lookup, no allocation.
pub fn parse(candidate: &str) -> Result<ParsedKey<'_>, KeyFormatError> {
    if candidate.len() > MAX_KEY_LEN || !candidate.is_ascii() {
        return Err(KeyFormatError::BadShape);
    }
    let (head, body) = candidate.rsplit_once('_').ok_or(KeyFormatError::BadShape)?;
    let (prefix, env) = head.rsplit_once('_').ok_or(KeyFormatError::BadShape)?;
    validate_prefix(prefix).map_err(|_| KeyFormatError::BadShape)?;
    let env = Environment::parse(env).ok_or(KeyFormatError::BadShape)?;
    if body.len() != RANDOM_LEN + CHECKSUM_LEN || base62::decode_all_valid(body).is_none() {
        return Err(KeyFormatError::BadShape);
    }
    let split = candidate.len() - CHECKSUM_LEN;
    let expected = base62::decode(&candidate[split..]).ok_or(KeyFormatError::BadShape)?;
    let actual = crc32fast::hash(&candidate.as_bytes()[..split]) as u64;
    if expected != actual {
        return Err(KeyFormatError::BadChecksum);
    }
    Ok(ParsedKey {
        whole: candidate,
        prefix,
        env,
    })
}

impl<'a> ParsedKey<'a> {
    pub fn prefix(&self) -> &'a str {
        self.prefix
    }

    pub fn environment(&self) -> Environment {
        self.env
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.whole)
    }

    /// `ak_live_AbCd`: enough to recognise a key in a list, far too little to use it.
    pub fn display_start(&self) -> String {
        let head = self.prefix.len() + 1 + self.env.as_str().len() + 1;
        self.whole[..head + 4].to_owned()
    }

    pub fn last4(&self) -> &'a str {
        &self.whole[self.whole.len() - 4..]
    }
}

/// SHA-256 of a whole key: what the database stores and the cache is keyed by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn of(key: &str) -> Self {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(KeyHash(out))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", &self.to_hex()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let k = generate("ak", Environment::Live).expect("valid prefix");
        let s = k.expose_plaintext();
        assert!(s.starts_with("ak_live_"));
        assert_eq!(s.len(), "ak_live_".len() + RANDOM_LEN + CHECKSUM_LEN);
        assert_eq!(k.start, &s[..12]);
        assert_eq!(k.last4, &s[s.len() - 4..]);
        assert_eq!(k.hash, KeyHash::of(s));
        let parsed = parse(s).expect("own keys parse");
        assert_eq!(parsed.prefix(), "ak");
        assert_eq!(parsed.environment(), Environment::Live);
    }

    #[test]
    fn the_configured_prefix_and_environment_are_used() {
        let k = generate("ap", Environment::Test).expect("valid prefix");
        assert!(k.expose_plaintext().starts_with("ap_test_"));
        assert!(generate("Bad_Prefix", Environment::Live).is_err());
        assert!(generate("", Environment::Live).is_err());
    }

    #[test]
    fn a_single_changed_character_fails_the_checksum() {
        let k = generate("sk", Environment::Live).expect("valid prefix");
        let s = k.expose_plaintext();
        let mut bytes = s.as_bytes().to_vec();
        let i = 10;
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert_eq!(parse(&tampered).err(), Some(KeyFormatError::BadChecksum));
    }

    #[test]
    fn malformed_credentials_are_refused_before_any_lookup() {
        for bad in [
            "",
            "ak_live_",
            "sk_prod_abc123xyz",
            "not a key",
            "ak_live_ééééééééééééééééééééééééééééééééééééé",
            "ak_staging_0123456789012345678901234567890123456",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse(&"a".repeat(10_000)).is_err());
    }

    #[test]
    fn random_parts_do_not_repeat() {
        let a = generate("ak", Environment::Live).expect("valid prefix");
        let b = generate("ak", Environment::Live).expect("valid prefix");
        assert_ne!(a.expose_plaintext(), b.expose_plaintext());
    }

    #[test]
    fn debug_output_never_contains_the_plaintext() {
        let k = generate("ak", Environment::Live).expect("valid prefix");
        let shown = format!("{k:?} {:?}", parse(k.expose_plaintext()).expect("parses"));
        assert!(!shown.contains(k.expose_plaintext()));
    }
}
