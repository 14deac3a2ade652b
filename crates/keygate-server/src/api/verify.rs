//! `POST /api/v1/keys/verify`: for services whose API already exists and asks Keygate about
//! each key. Always 200: the answer is in `valid` and `code`. It can consume the key's rate
//! limit and credits in the same call, and never reveals a key the caller may not see (another
//! account's key is simply `NOT_FOUND`).
//!
//! Hot path: the same cached lookup as authentication; no database write unless a credit cost
//! is asked for.

use axum::extract::State;
use keygate_core::Scope;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::http::auth::{key_refusal, lookup_key, KeyRefusal, VerifyCaller};
use crate::http::error::ApiResult;
use crate::http::extract::Json;
use crate::http::ApiError;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyIn {
    /// The API key to check.
    pub key: String,
    /// The scope the call needs: `read`, `write` or `admin`.
    #[schema(value_type = Option<String>)]
    pub scope: Option<Scope>,
    /// Credits the call costs (default 0).
    #[serde(default)]
    pub cost: u64,
    /// Count the call against the key's rate limit (default true).
    pub ratelimit: Option<bool>,
}

#[derive(Serialize, ToSchema, Default)]
pub struct VerifyOut {
    pub valid: bool,
    /// `VALID`, `NOT_FOUND`, `REVOKED`, `EXPIRED`, `DISABLED`, `FORBIDDEN`, `RATE_LIMITED`,
    /// `INSUFFICIENT_CREDITS`.
    pub code: &'static str,
    pub key_id: Option<String>,
    pub account_id: Option<String>,
    pub owner_id: Option<String>,
    pub scope: Option<&'static str>,
    pub environment: Option<&'static str>,
    pub ratelimit: Option<RateLimitOut>,
    pub credits: Option<CreditsOut>,
}

#[derive(Serialize, ToSchema)]
pub struct RateLimitOut {
    pub limit: u64,
    pub remaining: u64,
    /// Unix seconds when the limit is whole again.
    pub reset: i64,
}

#[derive(Serialize, ToSchema)]
pub struct CreditsOut {
    pub remaining: i64,
}

fn refused(code: &'static str) -> axum::Json<VerifyOut> {
    axum::Json(VerifyOut {
        valid: false,
        code,
        ..Default::default()
    })
}

#[utoipa::path(post, path = "/api/v1/keys/verify", tag = "verify", request_body = VerifyIn,
    responses((status = 200, body = VerifyOut, description = "always 200; see `valid` and `code`"),
              (status = 401), (status = 403, description = "the caller may not verify keys")))]
pub async fn verify_key(
    State(state): State<AppState>,
    VerifyCaller(caller): VerifyCaller,
    Json(body): Json<VerifyIn>,
) -> ApiResult<axum::Json<VerifyOut>> {
    let (hash, entry) = match lookup_key(&state, body.key.trim(), None).await {
        Ok(found) => found,
        Err(ApiError::Unauthorized(_)) => return Ok(refused("NOT_FOUND")),
        Err(err) => return Err(err),
    };
    let k = &entry.key;
    // Another account's key, or an operator key, looks exactly like an unknown one.
    let visible =
        k.account_id.is_some() && (caller.is_operator() || k.account_id == caller.account_id);
    if !visible {
        return Ok(refused("NOT_FOUND"));
    }
    let now = OffsetDateTime::now_utc();
    let mut out = VerifyOut {
        valid: false,
        code: "VALID",
        key_id: Some(k.id.to_string()),
        account_id: k.account_id.as_ref().map(ToString::to_string),
        owner_id: k.created_by.as_ref().map(ToString::to_string),
        scope: Some(k.scope.as_str()),
        environment: Some(k.environment.as_str()),
        ratelimit: None,
        credits: None,
    };
    if let Some(refusal) = key_refusal(&entry, now) {
        out.code = match refusal {
            KeyRefusal::NotFound => "NOT_FOUND",
            KeyRefusal::Revoked => "REVOKED",
            KeyRefusal::Expired => "EXPIRED",
            KeyRefusal::Disabled => "DISABLED",
        };
        return Ok(axum::Json(out));
    }
    if body.scope.is_some_and(|needed| !k.scope.allows(needed)) {
        out.code = "FORBIDDEN";
        return Ok(axum::Json(out));
    }
    let Some(account) = entry.account.as_ref() else {
        return Ok(refused("NOT_FOUND"));
    };
    state.usage.record(hash, &entry, now);
    if body.ratelimit.unwrap_or(true) && state.config.rate_limits_enabled {
        let outcome = crate::ratelimit::check_limits(&state, Some(k), account).await;
        let (info, denied) = match outcome {
            Ok(info) => (info, false),
            Err(info) => (Some(info), true),
        };
        if let Some(i) = info {
            let d = i.decision;
            let reset = now.unix_timestamp()
                + d.reset_after.as_secs() as i64
                + i64::from(d.reset_after.subsec_nanos() > 0);
            out.ratelimit = Some(RateLimitOut {
                limit: d.limit,
                remaining: d.remaining,
                reset,
            });
        }
        if denied {
            if let Some(limit) = out.ratelimit.as_ref().map(|r| r.limit) {
                crate::webhooks::events::rate_limit_exceeded(
                    &state,
                    &account.id,
                    Some(k.id.as_str()),
                    limit,
                );
            }
            out.code = "RATE_LIMITED";
            return Ok(axum::Json(out));
        }
    }
    if body.cost > 0 {
        let idem = format!(
            "verify:{}",
            crate::http::request_id::current()
                .unwrap_or_else(crate::http::request_id::new_request_id)
        );
        match crate::service::credits::debit(
            &state,
            &account.id,
            &account.plan,
            body.cost,
            idem,
            Some(&k.id),
            "verify".into(),
        )
        .await
        {
            Ok(e) => {
                out.credits = Some(CreditsOut {
                    remaining: e.balance_after,
                })
            }
            Err(ApiError::InsufficientCredits { available, .. }) => {
                out.code = "INSUFFICIENT_CREDITS";
                out.credits = Some(CreditsOut {
                    remaining: available,
                });
                return Ok(axum::Json(out));
            }
            Err(err) => return Err(err),
        }
    }
    out.valid = true;
    Ok(axum::Json(out))
}
