//! Compact JWS (RFC 7515): `base64url(header).base64url(claims).base64url(signature)`.
//!
//! Verification is on the per-request hot path of every token-authenticated call, so it does no
//! I/O and takes no lock; the order of its checks is the point of this module:
//!
//! 1. the length is bounded before anything is decoded;
//! 2. the header must name an algorithm we issue (never `none`) and a kid we hold, and the
//!    algorithm must be the one pinned to that kid, so a token cannot pick how it is checked;
//! 3. the signature is checked before the claims are even decoded;
//! 4. the claims' type implements [`Claims`], so expiry and issuer are always checked: there is
//!    no way to get claims out of a token without them.

use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::signature::ParsedPublicKey;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::jwk::{parse_public_jwk, Jwks};
use crate::key::{Algorithm, KeyError, SigningKey};

/// The longest token we look at. Ours are well under 1 KiB; the bound stops a client from
/// making us decode and parse megabytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The JWS `typ` header. Each claims type has one, so a token minted for one purpose (a Crossbar
/// auth token) is not accepted where another is expected (an OAuth access token, RFC 9068).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// `JWT`: the Crossbar and native auth tokens.
    Jwt,
    /// `at+jwt`: OAuth 2.0 access tokens (RFC 9068).
    AccessToken,
}

impl TokenType {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Jwt => "JWT",
            TokenType::AccessToken => "at+jwt",
        }
    }
}

/// What every token Keygate verifies must carry. Implementing it is the price of
/// [`Verifier::verify`], which is how expiry and the issuer are never left unchecked.
/// Times are JWT NumericDates: seconds since the Unix epoch.
pub trait Claims: Serialize + DeserializeOwned {
    /// The `typ` header tokens with these claims carry.
    const TYPE: TokenType;
    fn iss(&self) -> &str;
    fn exp(&self) -> i64;
    fn nbf(&self) -> Option<i64> {
        None
    }
    fn iat(&self) -> Option<i64> {
        None
    }
}

/// Why a token was refused. Each message is fixed text: a token is a credential and never
/// appears in an error, a log line or a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    UnsupportedAlgorithm,
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    #[error("the token's algorithm does not match its key")]
    AlgorithmMismatch,
    #[error("the token's type is not accepted here")]
    WrongType,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

#[derive(Deserialize)]
struct HeaderIn {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
    /// RFC 7515 §4.1.11: a recipient must refuse critical extensions it does not understand,
    /// and we understand none.
    crit: Option<serde_json::Value>,
}

impl SigningKey {
    /// Signs `claims` as a compact JWS with the header `{"alg", "typ", "kid"}` in that order,
    /// `typ` being `C::TYPE`.
    pub fn sign<C: Claims>(&self, claims: &C) -> Result<String, KeyError> {
        let header = serde_json::to_vec(&HeaderOut {
            alg: self.alg().as_str(),
            typ: C::TYPE.as_str(),
            kid: self.kid(),
        })?;
        let payload = serde_json::to_vec(claims)?;
        let mut token = String::with_capacity(MAX_TOKEN_LEN / 4);
        URL_SAFE_NO_PAD.encode_string(header, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = self.sign_bytes(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }
}

/// A public key pinned to the one algorithm it may verify.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub(crate) alg: Algorithm,
    pub(crate) key: ParsedPublicKey,
}

/// Verifies tokens against a set of public keys by kid, for one issuer.
///
/// It holds public material only, so it can be built from a JWKS document by any service.
/// Rotation: insert the new key before signing with it, and keep the old one until the last
/// token it signed has expired.
#[derive(Clone)]
pub struct Verifier {
    issuer: String,
    leeway: Duration,
    keys: HashMap<String, VerifyingKey>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Verifier {
    /// A verifier with no keys, accepting tokens whose `iss` is exactly `issuer`, with no clock
    /// leeway.
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            leeway: Duration::ZERO,
            keys: HashMap::new(),
        }
    }

    /// A verifier for every key of a JWKS document.
    pub fn from_jwks(issuer: impl Into<String>, jwks: &Jwks) -> Result<Self, KeyError> {
        let mut verifier = Self::new(issuer);
        for jwk in &jwks.keys {
            verifier.insert_jwk(jwk)?;
        }
        Ok(verifier)
    }

    /// Tolerated clock difference for `exp`, `nbf` and `iat`. Worth a few seconds when tokens
    /// minted on one node are checked on another.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Trusts one public JWK (as [`SigningKey::public_jwk`] produces). It must carry a `kid`;
    /// its algorithm comes from `alg`, or from `kty` when `alg` is absent.
    pub fn insert_jwk(&mut self, jwk: &serde_json::Value) -> Result<(), KeyError> {
        let (kid, key) = parse_public_jwk(jwk)?;
        self.keys.insert(kid, key);
        Ok(())
    }

    /// Trusts the public half of `key`.
    pub fn insert_key(&mut self, key: &SigningKey) -> Result<(), KeyError> {
        self.insert_jwk(&key.public_jwk())
    }

    /// Stops trusting a kid; returns whether it was known.
    pub fn remove_key(&mut self, kid: &str) -> bool {
        self.keys.remove(kid).is_some()
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Checks `token` completely (see the module documentation) and returns its claims.
    pub fn verify<C: Claims>(&self, token: &str, now: OffsetDateTime) -> Result<C, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut segments = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(TokenError::Malformed);
        };

        let header: HeaderIn = decode_json(header_b64)?;
        if header.crit.is_some() {
            return Err(TokenError::Malformed);
        }
        let alg: Algorithm = header
            .alg
            .parse()
            .map_err(|_| TokenError::UnsupportedAlgorithm)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        if key.alg != alg {
            return Err(TokenError::AlgorithmMismatch);
        }
        // We always write `typ`; RFC 7515 makes its comparison case-insensitive.
        match header.typ {
            Some(typ) if typ.eq_ignore_ascii_case(C::TYPE.as_str()) => {}
            _ => return Err(TokenError::WrongType),
        }

        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| TokenError::Malformed)?;
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        key.key
            .verify_sig(signing_input.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;

        let claims: C = decode_json(payload_b64)?;
        self.check_claims(&claims, now)?;
        Ok(claims)
    }

    /// The time and issuer checks [`Verifier::verify`] applies after the signature: `exp`
    /// (expired once `now >= exp + leeway`), `nbf` and `iat` when present (refused when later
    /// than `now + leeway`), and `iss` exactly equal to this verifier's issuer.
    pub fn check_claims<C: Claims>(
        &self,
        claims: &C,
        now: OffsetDateTime,
    ) -> Result<(), TokenError> {
        let now = now.unix_timestamp();
        let leeway = self.leeway.whole_seconds().max(0);
        if now >= claims.exp().saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        let future = |t: Option<i64>| t.is_some_and(|t| t > now.saturating_add(leeway));
        if future(claims.nbf()) || future(claims.iat()) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iss() != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        Ok(())
    }
}

fn decode_json<T: DeserializeOwned>(segment: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::key;
    use serde_json::json;

    const ISSUER: &str = "https://keygate.test";

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct TestClaims {
        iss: String,
        sub: String,
        exp: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        nbf: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        iat: Option<i64>,
    }

    impl Claims for TestClaims {
        const TYPE: TokenType = TokenType::Jwt;
        fn iss(&self) -> &str {
            &self.iss
        }
        fn exp(&self) -> i64 {
            self.exp
        }
        fn nbf(&self) -> Option<i64> {
            self.nbf
        }
        fn iat(&self) -> Option<i64> {
            self.iat
        }
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct AccessClaims {
        iss: String,
        exp: i64,
    }

    impl Claims for AccessClaims {
        const TYPE: TokenType = TokenType::AccessToken;
        fn iss(&self) -> &str {
            &self.iss
        }
        fn exp(&self) -> i64 {
            self.exp
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time")
    }

    fn claims() -> TestClaims {
        TestClaims {
            iss: ISSUER.into(),
            sub: "user_1".into(),
            exp: now().unix_timestamp() + 3600,
            nbf: None,
            iat: Some(now().unix_timestamp()),
        }
    }

    fn verifier_for(key: &SigningKey) -> Verifier {
        let mut verifier = Verifier::new(ISSUER);
        verifier.insert_key(key).expect("own JWK is valid");
        verifier
    }

    fn b64(json: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    /// A token with an arbitrary header and payload, signed by `key` over exactly those bytes.
    fn forge(key: &SigningKey, header: serde_json::Value, payload: &TestClaims) -> String {
        let payload = serde_json::to_value(payload).expect("serialise");
        let input = format!("{}.{}", b64(&header), b64(&payload));
        let signature = key.sign_bytes(input.as_bytes()).expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    #[test]
    fn rs256_tokens_round_trip() {
        let key = key(Algorithm::Rs256);
        let token = key.sign(&claims()).expect("sign");
        let verified: TestClaims = verifier_for(&key).verify(&token, now()).expect("valid");
        assert_eq!(verified, claims());
    }

    #[test]
    fn eddsa_tokens_round_trip() {
        let key = key(Algorithm::EdDsa);
        let token = key.sign(&claims()).expect("sign");
        let verified: TestClaims = verifier_for(&key).verify(&token, now()).expect("valid");
        assert_eq!(verified, claims());
    }

    #[test]
    fn rs256_header_is_alg_typ_kid_in_that_order_like_the_seeds() {
        let key = key(Algorithm::Rs256);
        let token = key.sign(&claims()).expect("sign");
        assert!(
            token.starts_with("eyJhbGciOiJSUzI1NiIs"),
            "the seeds' prefix"
        );
        assert!(token.starts_with("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6"));
        let header = token.split('.').next().expect("header");
        let header = URL_SAFE_NO_PAD.decode(header).expect("base64url");
        assert_eq!(
            String::from_utf8(header).expect("utf-8"),
            format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{}"}}"#, key.kid())
        );
        assert_eq!(token.split('.').count(), 3);
        assert!(!token.contains('='));
    }

    #[test]
    fn eddsa_header_names_eddsa() {
        let key = key(Algorithm::EdDsa);
        let token = key.sign(&claims()).expect("sign");
        let header: serde_json::Value =
            decode_json(token.split('.').next().expect("header")).expect("header json");
        assert_eq!(
            header,
            json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()})
        );
    }

    #[test]
    fn a_tampered_payload_is_rejected() {
        let key = key(Algorithm::Rs256);
        let token = key.sign(&claims()).expect("sign");
        let mut forged = claims();
        forged.sub = "user_admin".into();
        let parts: Vec<&str> = token.split('.').collect();
        let payload = b64(&serde_json::to_value(&forged).expect("serialise"));
        let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
        let result = verifier_for(&key).verify::<TestClaims>(&tampered, now());
        assert_eq!(result.expect_err("tampered"), TokenError::BadSignature);
    }

    #[test]
    fn a_tampered_signature_is_rejected() {
        for alg in [Algorithm::Rs256, Algorithm::EdDsa] {
            let key = key(alg);
            let token = key.sign(&claims()).expect("sign");
            let (input, signature) = token.rsplit_once('.').expect("three segments");
            let mut signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
            signature[10] ^= 1;
            let tampered = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&signature));
            let result = verifier_for(&key).verify::<TestClaims>(&tampered, now());
            assert_eq!(result.expect_err("tampered"), TokenError::BadSignature);

            let truncated = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&signature[..16]));
            let result = verifier_for(&key).verify::<TestClaims>(&truncated, now());
            assert_eq!(result.expect_err("truncated"), TokenError::BadSignature);
        }
    }

    #[test]
    fn a_token_signed_by_another_key_with_the_same_kid_is_rejected() {
        let trusted = key(Algorithm::EdDsa);
        let attacker = key(Algorithm::EdDsa);
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": trusted.kid()});
        let token = forge(&attacker, header, &claims());
        let result = verifier_for(&trusted).verify::<TestClaims>(&token, now());
        assert_eq!(result.expect_err("forged"), TokenError::BadSignature);
    }

    #[test]
    fn alg_none_is_rejected() {
        let key = key(Algorithm::Rs256);
        let header = json!({"alg": "none", "typ": "JWT", "kid": key.kid()});
        let payload = serde_json::to_value(claims()).expect("serialise");
        let verifier = verifier_for(&key);
        for token in [
            format!("{}.{}.", b64(&header), b64(&payload)),
            format!("{}.{}", b64(&header), b64(&payload)),
        ] {
            let result = verifier.verify::<TestClaims>(&token, now());
            assert!(
                matches!(
                    result,
                    Err(TokenError::UnsupportedAlgorithm | TokenError::Malformed)
                ),
                "{result:?}"
            );
        }
        let token = format!("{}.{}.", b64(&header), b64(&payload));
        assert_eq!(
            verifier
                .verify::<TestClaims>(&token, now())
                .expect_err("none"),
            TokenError::UnsupportedAlgorithm
        );
    }

    #[test]
    fn algorithms_we_do_not_issue_are_rejected() {
        let key = key(Algorithm::Rs256);
        for alg in ["HS256", "RS512", "PS256", "ES256", "rs256", ""] {
            let header = json!({"alg": alg, "typ": "JWT", "kid": key.kid()});
            let token = forge(&key, header, &claims());
            let result = verifier_for(&key).verify::<TestClaims>(&token, now());
            assert_eq!(result.expect_err(alg), TokenError::UnsupportedAlgorithm);
        }
    }

    #[test]
    fn a_header_alg_that_differs_from_the_kids_algorithm_is_rejected() {
        let rsa = key(Algorithm::Rs256);
        let ed = key(Algorithm::EdDsa);
        let mut verifier = verifier_for(&rsa);
        verifier.insert_key(&ed).expect("valid JWK");

        // An Ed25519 signature presented under the RSA key's kid, and the reverse.
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": rsa.kid()});
        let token = forge(&ed, header, &claims());
        let result = verifier.verify::<TestClaims>(&token, now());
        assert_eq!(result.expect_err("mismatch"), TokenError::AlgorithmMismatch);

        let header = json!({"alg": "RS256", "typ": "JWT", "kid": ed.kid()});
        let token = forge(&rsa, header, &claims());
        let result = verifier.verify::<TestClaims>(&token, now());
        assert_eq!(result.expect_err("mismatch"), TokenError::AlgorithmMismatch);
    }

    #[test]
    fn an_unknown_kid_is_rejected() {
        let signer = key(Algorithm::EdDsa);
        let other = key(Algorithm::EdDsa);
        let token = signer.sign(&claims()).expect("sign");
        let result = verifier_for(&other).verify::<TestClaims>(&token, now());
        assert_eq!(result.expect_err("unknown kid"), TokenError::UnknownKey);

        let header = json!({"alg": "EdDSA", "typ": "JWT"});
        let token = forge(&signer, header, &claims());
        let result = verifier_for(&signer).verify::<TestClaims>(&token, now());
        assert_eq!(result.expect_err("no kid"), TokenError::UnknownKey);
    }

    #[test]
    fn a_removed_key_no_longer_verifies() {
        let key = key(Algorithm::EdDsa);
        let token = key.sign(&claims()).expect("sign");
        let mut verifier = verifier_for(&key);
        assert!(verifier.remove_key(key.kid()));
        let result = verifier.verify::<TestClaims>(&token, now());
        assert_eq!(result.expect_err("removed"), TokenError::UnknownKey);
    }

    #[test]
    fn an_expired_token_is_rejected() {
        let key = key(Algorithm::EdDsa);
        let token = key.sign(&claims()).expect("sign");
        let verifier = verifier_for(&key);
        let exp = claims().exp;
        let at = |t: i64| OffsetDateTime::from_unix_timestamp(t).expect("valid time");
        assert!(verifier.verify::<TestClaims>(&token, at(exp - 1)).is_ok());
        assert_eq!(
            verifier
                .verify::<TestClaims>(&token, at(exp))
                .expect_err("at exp"),
            TokenError::Expired
        );
        assert_eq!(
            verifier
                .verify::<TestClaims>(&token, at(exp + 3600))
                .expect_err("later"),
            TokenError::Expired
        );
    }

    #[test]
    fn leeway_extends_expiry_by_that_much_only() {
        let key = key(Algorithm::EdDsa);
        let token = key.sign(&claims()).expect("sign");
        let verifier = verifier_for(&key).with_leeway(Duration::seconds(30));
        let exp = claims().exp;
        let at = |t: i64| OffsetDateTime::from_unix_timestamp(t).expect("valid time");
        assert!(verifier.verify::<TestClaims>(&token, at(exp + 29)).is_ok());
        assert_eq!(
            verifier
                .verify::<TestClaims>(&token, at(exp + 30))
                .expect_err("past leeway"),
            TokenError::Expired
        );
    }

    #[test]
    fn a_token_without_exp_is_malformed() {
        #[derive(Serialize)]
        struct NoExp {
            iss: &'static str,
        }
        let key = key(Algorithm::EdDsa);
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()});
        let input = format!(
            "{}.{}",
            b64(&header),
            b64(&serde_json::to_value(NoExp { iss: ISSUER }).expect("serialise"))
        );
        let signature = key.sign_bytes(input.as_bytes()).expect("sign");
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
        let result = verifier_for(&key).verify::<TestClaims>(&token, now());
        assert_eq!(result.expect_err("no exp"), TokenError::Malformed);
    }

    #[test]
    fn tokens_from_the_future_are_not_yet_valid() {
        let key = key(Algorithm::EdDsa);
        let verifier = verifier_for(&key);
        let later = now().unix_timestamp() + 60;

        let mut nbf = claims();
        nbf.nbf = Some(later);
        let token = key.sign(&nbf).expect("sign");
        let result = verifier.verify::<TestClaims>(&token, now());
        assert_eq!(result.expect_err("nbf"), TokenError::NotYetValid);

        let mut iat = claims();
        iat.iat = Some(later);
        let token = key.sign(&iat).expect("sign");
        let result = verifier.verify::<TestClaims>(&token, now());
        assert_eq!(result.expect_err("iat"), TokenError::NotYetValid);
        let lenient = verifier.clone().with_leeway(Duration::seconds(60));
        assert!(lenient.verify::<TestClaims>(&token, now()).is_ok());
    }

    #[test]
    fn a_token_from_another_issuer_is_rejected() {
        let key = key(Algorithm::EdDsa);
        let mut foreign = claims();
        foreign.iss = "https://evil.test".into();
        let token = key.sign(&foreign).expect("sign");
        let result = verifier_for(&key).verify::<TestClaims>(&token, now());
        assert_eq!(result.expect_err("issuer"), TokenError::WrongIssuer);
    }

    #[test]
    fn a_token_of_another_type_is_rejected() {
        let key = key(Algorithm::EdDsa);
        let access = AccessClaims {
            iss: ISSUER.into(),
            exp: now().unix_timestamp() + 60,
        };
        let token = key.sign(&access).expect("sign");
        assert!(
            token.starts_with(&URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"at+jwt","#)[..36])
        );
        let verifier = verifier_for(&key);
        assert!(verifier.verify::<AccessClaims>(&token, now()).is_ok());
        let result = verifier.verify::<TestClaims>(&token, now());
        assert_eq!(result.expect_err("at+jwt as JWT"), TokenError::WrongType);

        let header = json!({"alg": "EdDSA", "kid": key.kid()});
        let token = forge(&key, header, &claims());
        let result = verifier.verify::<TestClaims>(&token, now());
        assert_eq!(result.expect_err("no typ"), TokenError::WrongType);
    }

    #[test]
    fn critical_header_extensions_are_rejected() {
        let key = key(Algorithm::EdDsa);
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid(), "crit": ["exp"]});
        let token = forge(&key, header, &claims());
        let result = verifier_for(&key).verify::<TestClaims>(&token, now());
        assert_eq!(result.expect_err("crit"), TokenError::Malformed);
    }

    #[test]
    fn malformed_and_oversized_tokens_are_rejected_without_echoing_them() {
        let key = key(Algorithm::EdDsa);
        let verifier = verifier_for(&key);
        let token = key.sign(&claims()).expect("sign");
        let oversized = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN));
        let padded = format!("{token}==");
        let four = format!("{token}.{}", token.split('.').nth(2).expect("sig"));
        for bad in [
            "",
            ".",
            "..",
            "a.b.c",
            "not a token",
            "eyJ.eyJ.eyJ",
            oversized.as_str(),
            padded.as_str(),
            four.as_str(),
        ] {
            let error = verifier
                .verify::<TestClaims>(bad, now())
                .expect_err("malformed");
            assert_eq!(error, TokenError::Malformed, "{bad:.40}");
            let message = error.to_string();
            assert!(bad.is_empty() || !message.contains(bad));
        }
        let error = verifier
            .verify::<TestClaims>(&token, now() + Duration::days(1))
            .expect_err("expired");
        assert!(!error.to_string().contains(&token[..20]));
    }

    #[test]
    fn verifier_debug_lists_kids_only() {
        let key = key(Algorithm::EdDsa);
        let debug = format!("{:?}", verifier_for(&key));
        assert!(debug.contains(key.kid()));
        assert!(debug.contains(ISSUER));
    }
}
