//! The claims of a Keygate auth token: what `PUT /v2/api_auth`, `PUT /v2/user_auth` and
//! `POST /api/v1/auth/token` mint (typ `JWT`, RS256 by default, one hour by default).
//!
//! The ids are the typed ids of `keygate-core`, so a token whose `account_id` is not an account
//! id fails to deserialise and is refused as malformed, like any other bad token. `key_id`
//! names the API key a token was exchanged for, so revoking that key can revoke its tokens;
//! `jti` names the token itself for the deny-list that `DELETE /v2/token_auth` writes.

use keygate_core::{AccountId, ClientId, KeyId, Scope, UserId};
use serde::{Deserialize, Serialize};

use crate::jws::{Claims, TokenType};

/// How the credential behind a token was presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// An API key exchanged at `/v2/api_auth` or `/api/v1/auth/token`.
    ApiKey,
    /// A user's credentials at `/v2/user_auth`.
    UserAuth,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthClaims {
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub account_id: AccountId,
    /// The user the credential belongs to: the key's creator, or the user who logged in.
    pub owner_id: UserId,
    pub method: AuthMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<KeyId>,
    pub scope: Scope,
    pub jti: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}

impl Claims for AuthClaims {
    const TYPE: TokenType = TokenType::Jwt;

    fn iss(&self) -> &str {
        &self.iss
    }

    fn exp(&self) -> i64 {
        self.exp
    }

    fn iat(&self) -> Option<i64> {
        Some(self.iat)
    }
}

/// An OAuth 2.0 access token (RFC 9068, typ `at+jwt`), signed with the same keys as auth
/// tokens and verified through the same JWKS; the `typ` keeps the two from being confused.
///
/// `sub` is the user who authorized the client, or, for the client credentials grant where no
/// user is involved, the client id itself (RFC 9068 §2.2). `scope` is space-separated Keygate
/// scopes; `account_id` is the account the token acts in (the user's, or the client's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: ClientId,
    pub scope: String,
    pub account_id: AccountId,
}

impl AccessClaims {
    /// The user the token speaks for; `None` for a client credentials token.
    pub fn user_id(&self) -> Option<UserId> {
        UserId::parse(&self.sub)
    }
}

impl Claims for AccessClaims {
    const TYPE: TokenType = TokenType::AccessToken;

    fn iss(&self) -> &str {
        &self.iss
    }

    fn exp(&self) -> i64 {
        self.exp
    }

    fn iat(&self) -> Option<i64> {
        Some(self.iat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::key;
    use crate::{Algorithm, TokenError, Verifier};
    use time::OffsetDateTime;

    fn api_key_claims(now: i64) -> AuthClaims {
        AuthClaims {
            iss: "https://keygate.test".into(),
            sub: None,
            account_id: AccountId::generate(),
            owner_id: UserId::generate(),
            method: AuthMethod::ApiKey,
            key_id: Some(KeyId::generate()),
            scope: Scope::Write,
            jti: "tok_1".into(),
            iat: now,
            exp: now + 3600,
        }
    }

    #[test]
    fn auth_claims_serialise_with_crossbar_names_and_skip_absent_fields() {
        let claims = api_key_claims(1_700_000_000);
        let json = serde_json::to_value(&claims).expect("serialise");
        assert_eq!(json["method"], "api_key");
        assert_eq!(json["scope"], "write");
        assert_eq!(json["account_id"], claims.account_id.as_str());
        assert_eq!(json["owner_id"], claims.owner_id.as_str());
        assert!(json.get("sub").is_none());

        let mut user = claims.clone();
        user.method = AuthMethod::UserAuth;
        user.key_id = None;
        let json = serde_json::to_value(&user).expect("serialise");
        assert_eq!(json["method"], "user_auth");
        assert!(json.get("key_id").is_none());
        let back: AuthClaims = serde_json::from_value(json).expect("deserialise");
        assert_eq!(back, user);
    }

    #[test]
    fn auth_claims_survive_a_signed_round_trip() {
        let key = key(Algorithm::Rs256);
        let now = OffsetDateTime::now_utc();
        let claims = api_key_claims(now.unix_timestamp());
        let token = key.sign(&claims).expect("sign");
        let mut verifier = Verifier::new("https://keygate.test");
        verifier.insert_key(&key).expect("valid JWK");
        let verified: AuthClaims = verifier.verify(&token, now).expect("valid");
        assert_eq!(verified, claims);
    }

    #[test]
    fn a_token_whose_ids_are_not_typed_ids_is_malformed() {
        let key = key(Algorithm::EdDsa);
        let now = OffsetDateTime::now_utc();
        let mut json = serde_json::to_value(api_key_claims(now.unix_timestamp())).expect("json");
        json["account_id"] = "account_abc123".into();
        #[derive(Serialize, Deserialize)]
        struct Raw(serde_json::Value);
        impl Claims for Raw {
            const TYPE: TokenType = TokenType::Jwt;
            fn iss(&self) -> &str {
                "https://keygate.test"
            }
            fn exp(&self) -> i64 {
                i64::MAX
            }
        }
        let token = key.sign(&Raw(json)).expect("sign");
        let mut verifier = Verifier::new("https://keygate.test");
        verifier.insert_key(&key).expect("valid JWK");
        let result = verifier.verify::<AuthClaims>(&token, now);
        assert_eq!(result.expect_err("bad id"), TokenError::Malformed);
    }

    #[test]
    fn access_tokens_are_at_jwt_and_not_accepted_as_auth_tokens() {
        let key = key(Algorithm::Rs256);
        let now = OffsetDateTime::now_utc();
        let t = now.unix_timestamp();
        let user = UserId::generate();
        let claims = AccessClaims {
            iss: "https://keygate.test".into(),
            sub: user.to_string(),
            aud: "https://keygate.test".into(),
            exp: t + 600,
            iat: t,
            jti: "tok_1".into(),
            client_id: ClientId::generate(),
            scope: "read write".into(),
            account_id: AccountId::generate(),
        };
        let token = key.sign(&claims).expect("sign");
        let mut verifier = Verifier::new("https://keygate.test");
        verifier.insert_key(&key).expect("valid JWK");
        let back: AccessClaims = verifier.verify(&token, now).expect("valid");
        assert_eq!(back.user_id(), Some(user));
        assert_eq!(
            verifier.verify::<AuthClaims>(&token, now),
            Err(TokenError::WrongType)
        );
        let machine = AccessClaims {
            sub: claims.client_id.to_string(),
            ..claims
        };
        assert_eq!(machine.user_id(), None);
    }
}
