//! `/api/v1/accounts`: an account reads and (as admin) renames itself; operators create, list,
//! re-plan, disable and delete accounts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use keygate_core::AccountId;
use keygate_store::{Account, AccountStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::keys::KeyOut;
use super::users::UserOut;
use crate::http::auth::{Admin, Operator, Reader};
use crate::http::error::ApiResult;
use crate::http::extract::{Json, PathParams, Query};
use crate::http::paging::{page_headers, page_request};
use crate::http::ApiError;
use crate::service::accounts::{self as svc, NewAccount};
use crate::service::{now, rfc3339, users::validate_email};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct AccountOut {
    pub id: String,
    pub name: String,
    pub email: String,
    pub plan: String,
    /// `active` or `disabled`.
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Account> for AccountOut {
    fn from(a: &Account) -> Self {
        AccountOut {
            id: a.id.to_string(),
            name: a.name.clone(),
            email: a.email.clone(),
            plan: a.plan.clone(),
            status: a.status.as_str().to_owned(),
            created_at: rfc3339(a.created_at),
            updated_at: rfc3339(a.updated_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountIn {
    pub name: String,
    /// The owner's email; also their username.
    pub email: String,
    pub plan: Option<String>,
    pub password: Option<String>,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
}

#[derive(Serialize, ToSchema)]
pub struct AccountCreatedOut {
    pub account: AccountOut,
    pub owner: UserOut,
    /// The account's first admin key, shown once.
    pub api_key: String,
    pub key: KeyOut,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    pub name: Option<String>,
    pub email: Option<String>,
    /// Operators only.
    pub plan: Option<String>,
    /// `active` or `disabled`; operators only.
    pub status: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct PageParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

pub(crate) fn parse_account_id(raw: &str) -> ApiResult<AccountId> {
    AccountId::parse(raw).ok_or_else(|| ApiError::not_found("Account"))
}

#[utoipa::path(post, path = "/api/v1/accounts", tag = "accounts", request_body = AccountIn,
    responses((status = 201, body = AccountCreatedOut), (status = 403), (status = 409)))]
pub async fn create_account(
    State(state): State<AppState>,
    Operator(_who): Operator,
    Json(body): Json<AccountIn>,
) -> ApiResult<impl IntoResponse> {
    let created = svc::create_account(
        &state,
        NewAccount {
            name: body.name,
            email: body.email,
            plan: body.plan,
            password: body.password,
            first_name: body.first_name,
            last_name: body.last_name,
        },
    )
    .await?;
    let out = AccountCreatedOut {
        account: AccountOut::from(&created.account),
        owner: UserOut::from(&created.owner),
        key: KeyOut::new(&created.key, time::OffsetDateTime::now_utc()),
        api_key: created.plaintext.into_plaintext(),
    };
    Ok((StatusCode::CREATED, axum::Json(out)))
}

#[utoipa::path(get, path = "/api/v1/accounts", tag = "accounts", params(PageParams),
    responses((status = 200, body = Vec<AccountOut>)))]
pub async fn list_accounts(
    State(state): State<AppState>,
    Operator(_who): Operator,
    Query(params): Query<PageParams>,
) -> ApiResult<impl IntoResponse> {
    let req = page_request(params.limit, params.cursor)?;
    let page = state.store.list_accounts(&req).await?;
    let headers = page_headers(
        &page,
        req.limit,
        "/api/v1/accounts",
        page.items.last().map(|a| a.id.as_str()),
    );
    Ok((
        headers,
        axum::Json(page.items.iter().map(AccountOut::from).collect::<Vec<_>>()),
    ))
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}", tag = "accounts", params(("id" = String, Path)),
    responses((status = 200, body = AccountOut), (status = 404)))]
pub async fn get_account(
    State(state): State<AppState>,
    Reader(who): Reader,
    PathParams(id): PathParams<String>,
) -> ApiResult<axum::Json<AccountOut>> {
    let id = parse_account_id(&id)?;
    who.account_access(&id)?;
    let account = state
        .store
        .get_account(&id)
        .await
        .map_err(|_| ApiError::not_found("Account"))?;
    Ok(axum::Json(AccountOut::from(&account)))
}

#[utoipa::path(patch, path = "/api/v1/accounts/{id}", tag = "accounts", request_body = AccountPatch,
    params(("id" = String, Path)), responses((status = 200, body = AccountOut), (status = 403), (status = 404)))]
pub async fn update_account(
    State(state): State<AppState>,
    Admin(who): Admin,
    PathParams(id): PathParams<String>,
    Json(patch): Json<AccountPatch>,
) -> ApiResult<axum::Json<AccountOut>> {
    let id = parse_account_id(&id)?;
    who.account_access(&id)?;
    let before = state
        .store
        .get_account(&id)
        .await
        .map_err(|_| ApiError::not_found("Account"))?;
    let mut account = before.clone();
    if (patch.plan.is_some() || patch.status.is_some()) && !who.is_operator() {
        return Err(ApiError::forbidden(
            "Only an operator can change an account's plan or status",
        ));
    }
    if let Some(name) = patch.name {
        account.name = svc::validate_account_name(&name)?;
    }
    if let Some(email) = patch.email {
        account.email = validate_email(&email)?;
    }
    if let Some(plan) = patch.plan {
        account.plan = svc::validate_plan(&state, &plan)?;
    }
    if let Some(status) = patch.status {
        account.status = AccountStatus::parse(&status)
            .ok_or_else(|| ApiError::invalid_field("status", "must be active or disabled"))?;
    }
    account.updated_at = now();
    svc::update_account(&state, &before, &account).await?;
    Ok(axum::Json(AccountOut::from(&account)))
}

#[utoipa::path(delete, path = "/api/v1/accounts/{id}", tag = "accounts", params(("id" = String, Path)),
    responses((status = 200, body = AccountOut, description = "the deleted account"), (status = 404)))]
pub async fn delete_account(
    State(state): State<AppState>,
    Operator(_who): Operator,
    PathParams(id): PathParams<String>,
) -> ApiResult<axum::Json<AccountOut>> {
    let id = parse_account_id(&id)?;
    let account = state
        .store
        .get_account(&id)
        .await
        .map_err(|_| ApiError::not_found("Account"))?;
    svc::delete_account(&state, &id).await?;
    Ok(axum::Json(AccountOut::from(&account)))
}
