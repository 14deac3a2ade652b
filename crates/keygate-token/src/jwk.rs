//! JWK sets (RFC 7517): what `/.well-known/jwks.json` publishes, and how a [`crate::Verifier`]
//! turns a public JWK back into a key. Only the shapes we issue are accepted (RSA of at least
//! 2048 bits for RS256, Ed25519 for EdDSA), so a JWKS cannot smuggle in a weaker algorithm.

use aws_lc_rs::signature::{
    ParsedPublicKey, RsaPublicKeyComponents, ED25519, RSA_PKCS1_2048_8192_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::jws::VerifyingKey;
use crate::key::{Algorithm, KeyError};

/// A JWK set: `{"keys": [...]}`. The keys stay JSON values so that members we do not know pass
/// through unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<serde_json::Value>,
}

impl From<&[serde_json::Value]> for Jwks {
    fn from(keys: &[serde_json::Value]) -> Self {
        Self {
            keys: keys.to_vec(),
        }
    }
}

impl From<Vec<serde_json::Value>> for Jwks {
    fn from(keys: Vec<serde_json::Value>) -> Self {
        Self { keys }
    }
}

impl FromIterator<serde_json::Value> for Jwks {
    fn from_iter<I: IntoIterator<Item = serde_json::Value>>(keys: I) -> Self {
        Self {
            keys: keys.into_iter().collect(),
        }
    }
}

#[derive(Deserialize)]
struct PublicJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    /// A private RSA or OKP member: a JWKS must never carry one, so seeing it means a mistake.
    d: Option<serde_json::Value>,
}

/// The kid and the pinned verification key of one public JWK.
pub(crate) fn parse_public_jwk(
    jwk: &serde_json::Value,
) -> Result<(String, VerifyingKey), KeyError> {
    let jwk = PublicJwk::deserialize(jwk).map_err(|_| KeyError::InvalidJwk("not a JWK object"))?;
    if jwk.d.is_some() {
        return Err(KeyError::InvalidJwk("contains private key material"));
    }
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err(KeyError::InvalidJwk("use is not sig"));
    }
    let kid = jwk.kid.ok_or(KeyError::InvalidJwk("no kid"))?;
    let alg = match (jwk.kty.as_str(), jwk.alg.as_deref()) {
        ("RSA", None | Some("RS256")) => Algorithm::Rs256,
        ("OKP", None | Some("EdDSA")) => Algorithm::EdDsa,
        ("RSA" | "OKP", Some(_)) => {
            return Err(KeyError::InvalidJwk("alg is not one we issue for this kty"))
        }
        _ => return Err(KeyError::InvalidJwk("kty is neither RSA nor OKP")),
    };
    let key = match alg {
        Algorithm::Rs256 => {
            let n = decode_member(jwk.n.as_deref(), "n")?;
            let e = decode_member(jwk.e.as_deref(), "e")?;
            if n.first() == Some(&0) || e.first() == Some(&0) {
                return Err(KeyError::InvalidJwk("n or e has a leading zero octet"));
            }
            if n.len() < 256 {
                return Err(KeyError::InvalidJwk("RSA modulus shorter than 2048 bits"));
            }
            RsaPublicKeyComponents { n, e }
                .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
                .map_err(|_| KeyError::InvalidJwk("not a valid RSA public key"))?
        }
        Algorithm::EdDsa => {
            if jwk.crv.as_deref() != Some("Ed25519") {
                return Err(KeyError::InvalidJwk("crv is not Ed25519"));
            }
            let x = decode_member(jwk.x.as_deref(), "x")?;
            if x.len() != 32 {
                return Err(KeyError::InvalidJwk("x is not 32 bytes"));
            }
            ParsedPublicKey::new(&ED25519, x)
                .map_err(|_| KeyError::InvalidJwk("not a valid Ed25519 public key"))?
        }
    };
    Ok((kid, VerifyingKey { alg, key }))
}

fn decode_member(value: Option<&str>, name: &'static str) -> Result<Vec<u8>, KeyError> {
    let value = value.ok_or(KeyError::InvalidJwk(match name {
        "n" => "no n",
        "e" => "no e",
        _ => "no x",
    }))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| KeyError::InvalidJwk("member is not unpadded base64url"))?;
    if bytes.is_empty() {
        return Err(KeyError::InvalidJwk("member is empty"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::key;
    use crate::{Claims, TokenType, Verifier};
    use serde_json::json;
    use time::OffsetDateTime;

    #[derive(Serialize, Deserialize)]
    struct Minimal {
        iss: String,
        exp: i64,
    }

    impl Claims for Minimal {
        const TYPE: TokenType = TokenType::Jwt;
        fn iss(&self) -> &str {
            &self.iss
        }
        fn exp(&self) -> i64 {
            self.exp
        }
    }

    #[test]
    fn jwks_serialises_as_a_keys_array() {
        let rsa = key(Algorithm::Rs256);
        let ed = key(Algorithm::EdDsa);
        let jwks = Jwks::from(&[rsa.public_jwk(), ed.public_jwk()][..]);
        let json = serde_json::to_value(&jwks).expect("serialise");
        assert_eq!(json, json!({"keys": [rsa.public_jwk(), ed.public_jwk()]}));
    }

    #[test]
    fn a_verifier_built_from_a_published_jwks_verifies_tokens() {
        let rsa = key(Algorithm::Rs256);
        let ed = key(Algorithm::EdDsa);
        let published =
            serde_json::to_string(&Jwks::from_iter([rsa.public_jwk(), ed.public_jwk()]))
                .expect("serialise");
        let jwks: Jwks = serde_json::from_str(&published).expect("parse");
        let verifier = Verifier::from_jwks("iss", &jwks).expect("valid JWKS");
        let mut kids: Vec<&str> = verifier.kids().collect();
        kids.sort_unstable();
        let mut expected = vec![rsa.kid(), ed.kid()];
        expected.sort_unstable();
        assert_eq!(kids, expected);

        let now = OffsetDateTime::now_utc();
        let claims = Minimal {
            iss: "iss".into(),
            exp: now.unix_timestamp() + 60,
        };
        for key in [&rsa, &ed] {
            let token = key.sign(&claims).expect("sign");
            assert!(verifier.verify::<Minimal>(&token, now).is_ok());
        }
    }

    #[test]
    fn a_jwk_without_alg_takes_the_algorithm_of_its_kty() {
        let ed = key(Algorithm::EdDsa);
        let mut jwk = ed.public_jwk();
        jwk.as_object_mut().expect("object").remove("alg");
        let (kid, parsed) = parse_public_jwk(&jwk).expect("valid");
        assert_eq!(kid, ed.kid());
        assert_eq!(parsed.alg, Algorithm::EdDsa);
    }

    #[test]
    fn jwks_with_keys_we_do_not_issue_are_refused() {
        let rsa = key(Algorithm::Rs256).public_jwk();
        let ed = key(Algorithm::EdDsa).public_jwk();
        let with = |base: &serde_json::Value, name: &str, value: serde_json::Value| {
            let mut jwk = base.clone();
            jwk[name] = value;
            jwk
        };
        let without = |base: &serde_json::Value, name: &str| {
            let mut jwk = base.clone();
            jwk.as_object_mut().expect("object").remove(name);
            jwk
        };
        let short_n = URL_SAFE_NO_PAD.encode([0xC5u8; 128]);
        let n = URL_SAFE_NO_PAD
            .decode(rsa["n"].as_str().expect("n"))
            .expect("base64url");
        let leading_zero_n = URL_SAFE_NO_PAD.encode([&[0u8][..], &n].concat());
        let bad = [
            json!("not an object"),
            json!({"kty": "oct", "kid": "k", "k": "c2VjcmV0"}),
            json!({"kty": "EC", "kid": "k", "crv": "P-256", "x": "AA", "y": "AA"}),
            with(&rsa, "alg", json!("HS256")),
            with(&rsa, "alg", json!("EdDSA")),
            with(&ed, "alg", json!("RS256")),
            with(&rsa, "use", json!("enc")),
            with(&rsa, "n", json!(short_n)),
            with(&rsa, "n", json!(leading_zero_n)),
            with(&rsa, "e", json!("AQAB==")),
            with(&rsa, "d", json!("private")),
            with(&ed, "crv", json!("X25519")),
            with(&ed, "x", json!("AAAA")),
            without(&rsa, "kid"),
            without(&rsa, "n"),
            without(&ed, "x"),
        ];
        for jwk in bad {
            assert!(
                matches!(parse_public_jwk(&jwk), Err(KeyError::InvalidJwk(_))),
                "{jwk}"
            );
        }
    }
}
