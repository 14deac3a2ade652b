//! `/api/v1/credits`: the balance and the ledger of the caller's account; operators grant
//! credits with `POST /api/v1/accounts/{id}/credits`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use keygate_store::CreditEntry;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::accounts::{parse_account_id, PageParams};
use crate::http::auth::{Operator, Reader};
use crate::http::error::ApiResult;
use crate::http::extract::{Json, PathParams, Query};
use crate::http::paging::{page_headers, page_request};
use crate::http::ApiError;
use crate::service::credits::{self as svc, next_reset};
use crate::service::rfc3339;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct CreditsOut {
    pub balance: i64,
    pub total_credits_used: i64,
    /// When the plan's monthly allowance next tops the balance up (UTC date).
    pub next_reset_date: String,
    pub plan: String,
    pub monthly_credits: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct CreditEntryOut {
    pub id: String,
    /// Negative for a debit.
    pub amount: i64,
    pub balance_after: i64,
    /// `grant`, `debit` or `refill`.
    pub kind: String,
    pub description: String,
    pub idempotency_key: String,
    pub key_id: Option<String>,
    pub created_at: String,
}

impl From<&CreditEntry> for CreditEntryOut {
    fn from(e: &CreditEntry) -> Self {
        CreditEntryOut {
            id: e.id.clone(),
            amount: e.amount,
            balance_after: e.balance_after,
            kind: e.kind.as_str().to_owned(),
            description: e.description.clone(),
            idempotency_key: e.idempotency_key.clone(),
            key_id: e.key_id.as_ref().map(ToString::to_string),
            created_at: rfc3339(e.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantIn {
    /// Credits to add (1 to 10^12).
    pub amount: u64,
    /// Makes a retried grant apply once; a new one is made when absent.
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub description: String,
}

fn plan_of(who: &crate::http::auth::Principal) -> ApiResult<String> {
    who.account()
        .map(|a| a.plan.clone())
        .ok_or_else(|| ApiError::forbidden("Operator keys have no credits"))
}

#[utoipa::path(get, path = "/api/v1/credits", tag = "credits", responses((status = 200, body = CreditsOut)))]
pub async fn get_credits(
    State(state): State<AppState>,
    Reader(who): Reader,
) -> ApiResult<axum::Json<CreditsOut>> {
    let account = who.own_account()?.clone();
    let plan = plan_of(&who)?;
    let credits = svc::state_of(&state, &account, &plan).await?;
    Ok(axum::Json(CreditsOut {
        balance: credits.balance,
        total_credits_used: credits.used,
        next_reset_date: next_reset(OffsetDateTime::now_utc()).to_string(),
        monthly_credits: state
            .config
            .plans
            .get(&plan)
            .and_then(|p| p.monthly_credits),
        plan,
    }))
}

#[utoipa::path(get, path = "/api/v1/credits/usage", tag = "credits", params(PageParams),
    responses((status = 200, body = Vec<CreditEntryOut>, description = "the ledger, oldest first")))]
pub async fn credit_usage(
    State(state): State<AppState>,
    Reader(who): Reader,
    Query(params): Query<PageParams>,
) -> ApiResult<impl IntoResponse> {
    let account = who.own_account()?.clone();
    svc::refill_if_due(&state, &account, &plan_of(&who)?).await?;
    let req = page_request(params.limit, params.cursor)?;
    let page = state.store.list_credit_entries(&account, &req).await?;
    let headers = page_headers(
        &page,
        req.limit,
        "/api/v1/credits/usage",
        page.items.last().map(|e| e.id.as_str()),
    );
    Ok((
        headers,
        axum::Json(
            page.items
                .iter()
                .map(CreditEntryOut::from)
                .collect::<Vec<_>>(),
        ),
    ))
}

#[utoipa::path(post, path = "/api/v1/accounts/{id}/credits", tag = "credits", request_body = GrantIn,
    params(("id" = String, Path)),
    responses((status = 201, body = CreditEntryOut), (status = 200, body = CreditEntryOut, description = "already granted with this idempotency key")))]
pub async fn grant_credits(
    State(state): State<AppState>,
    Operator(_who): Operator,
    PathParams(id): PathParams<String>,
    Json(body): Json<GrantIn>,
) -> ApiResult<impl IntoResponse> {
    let account = parse_account_id(&id)?;
    if !(1..=1_000_000_000_000).contains(&body.amount) {
        return Err(ApiError::invalid_field(
            "amount",
            "must be between 1 and 10^12",
        ));
    }
    let key = match body.idempotency_key {
        Some(k) if (1..=200).contains(&k.len()) => k,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "idempotency_key",
                "must be 1 to 200 characters",
            ))
        }
        None => format!("grant:{}", uuid::Uuid::new_v4().simple()),
    };
    let acct = state
        .store
        .get_account(&account)
        .await
        .map_err(|_| ApiError::not_found("Account"))?;
    let (entry, new) = svc::grant(
        &state,
        &acct.id,
        &acct.plan,
        body.amount,
        key,
        body.description,
    )
    .await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(CreditEntryOut::from(&entry))))
}
