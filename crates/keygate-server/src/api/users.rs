//! `/api/v1/accounts/{id}/users`: the people of an account. Any key of the account reads them;
//! changing them takes `admin`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use keygate_core::{AccountId, UserId};
use keygate_store::{Role, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::accounts::{parse_account_id, PageParams};
use crate::http::auth::{Admin, Reader};
use crate::http::error::ApiResult;
use crate::http::extract::{Json, PathParams, Query};
use crate::http::paging::{page_headers, page_request};
use crate::http::ApiError;
use crate::service::rfc3339;
use crate::service::users::{self as svc, NewUser, UserChange};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct UserOut {
    pub id: String,
    pub account_id: String,
    pub email: String,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    /// `owner`, `admin` or `member`.
    pub role: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&User> for UserOut {
    fn from(u: &User) -> Self {
        UserOut {
            id: u.id.to_string(),
            account_id: u.account_id.to_string(),
            email: u.email.clone(),
            username: u.username.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            role: u.role.as_str().to_owned(),
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserIn {
    pub email: String,
    /// Defaults to the email; compared case-insensitively.
    pub username: Option<String>,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    /// `admin` or `member` (default).
    #[schema(value_type = Option<String>)]
    pub role: Option<Role>,
    pub password: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub email: Option<String>,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    #[schema(value_type = Option<String>)]
    pub role: Option<Role>,
    pub password: Option<String>,
}

impl From<UserPatch> for UserChange {
    fn from(p: UserPatch) -> Self {
        UserChange {
            email: p.email,
            username: p.username,
            first_name: p.first_name,
            last_name: p.last_name,
            role: p.role,
            password: p.password,
        }
    }
}

pub(crate) fn parse_ids(account: &str, user: &str) -> ApiResult<(AccountId, UserId)> {
    let account = parse_account_id(account)?;
    let user = UserId::parse(user).ok_or_else(|| ApiError::not_found("User"))?;
    Ok((account, user))
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}/users", tag = "users", params(("id" = String, Path), PageParams),
    responses((status = 200, body = Vec<UserOut>)))]
pub async fn list_users(
    State(state): State<AppState>,
    Reader(who): Reader,
    PathParams(id): PathParams<String>,
    Query(params): Query<PageParams>,
) -> ApiResult<impl IntoResponse> {
    let account = parse_account_id(&id)?;
    who.account_access(&account)?;
    let req = page_request(params.limit, params.cursor)?;
    let page = state.store.list_users(&account, &req).await?;
    let base = format!("/api/v1/accounts/{account}/users");
    let headers = page_headers(
        &page,
        req.limit,
        &base,
        page.items.last().map(|u| u.id.as_str()),
    );
    Ok((
        headers,
        axum::Json(page.items.iter().map(UserOut::from).collect::<Vec<_>>()),
    ))
}

#[utoipa::path(post, path = "/api/v1/accounts/{id}/users", tag = "users", request_body = UserIn,
    params(("id" = String, Path)), responses((status = 201, body = UserOut), (status = 409)))]
pub async fn create_user(
    State(state): State<AppState>,
    Admin(who): Admin,
    PathParams(id): PathParams<String>,
    Json(body): Json<UserIn>,
) -> ApiResult<impl IntoResponse> {
    let account = parse_account_id(&id)?;
    who.account_access(&account)?;
    state
        .store
        .get_account(&account)
        .await
        .map_err(|_| ApiError::not_found("Account"))?;
    let role = body.role.unwrap_or(Role::Member);
    if role == Role::Owner {
        return Err(ApiError::invalid_field(
            "role",
            "there is one owner per account",
        ));
    }
    let new = NewUser {
        email: body.email,
        username: body.username,
        first_name: body.first_name,
        last_name: body.last_name,
        role,
        password: body.password,
    };
    let user = svc::create_user(&state, &account, new).await?;
    Ok((StatusCode::CREATED, axum::Json(UserOut::from(&user))))
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}/users/{user_id}", tag = "users",
    params(("id" = String, Path), ("user_id" = String, Path)), responses((status = 200, body = UserOut), (status = 404)))]
pub async fn get_user(
    State(state): State<AppState>,
    Reader(who): Reader,
    PathParams((id, user_id)): PathParams<(String, String)>,
) -> ApiResult<axum::Json<UserOut>> {
    let (account, user) = parse_ids(&id, &user_id)?;
    who.account_access(&account)?;
    let user = state
        .store
        .get_user(&account, &user)
        .await
        .map_err(|_| ApiError::not_found("User"))?;
    Ok(axum::Json(UserOut::from(&user)))
}

#[utoipa::path(patch, path = "/api/v1/accounts/{id}/users/{user_id}", tag = "users", request_body = UserPatch,
    params(("id" = String, Path), ("user_id" = String, Path)), responses((status = 200, body = UserOut), (status = 404)))]
pub async fn update_user(
    State(state): State<AppState>,
    Admin(who): Admin,
    PathParams((id, user_id)): PathParams<(String, String)>,
    Json(patch): Json<UserPatch>,
) -> ApiResult<axum::Json<UserOut>> {
    let (account, user) = parse_ids(&id, &user_id)?;
    who.account_access(&account)?;
    let user = state
        .store
        .get_user(&account, &user)
        .await
        .map_err(|_| ApiError::not_found("User"))?;
    let user = svc::update_user(&state, user, patch.into()).await?;
    Ok(axum::Json(UserOut::from(&user)))
}

#[utoipa::path(delete, path = "/api/v1/accounts/{id}/users/{user_id}", tag = "users",
    params(("id" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, body = UserOut, description = "the deleted user"), (status = 404), (status = 409)))]
pub async fn delete_user(
    State(state): State<AppState>,
    Admin(who): Admin,
    PathParams((id, user_id)): PathParams<(String, String)>,
) -> ApiResult<axum::Json<UserOut>> {
    let (account, user) = parse_ids(&id, &user_id)?;
    who.account_access(&account)?;
    let user = svc::delete_user(&state, &account, &user).await?;
    Ok(axum::Json(UserOut::from(&user)))
}
