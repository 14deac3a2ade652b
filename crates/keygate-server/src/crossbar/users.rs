//! `/v2/accounts/{id}/users`: list (Crossbar paging), create with PUT, read, update with POST
//! or PATCH, delete. Roles appear as Crossbar's `priv_level`: `admin` or `user`.

use axum::extract::State;
use keygate_core::UserId;
use keygate_store::{PageRequest, Role, User};
use serde::Deserialize;
use serde_json::{json, Value};

use super::accounts::visible_account;
use super::{Cb, CbError, CbPaging, CbResult, Data, Envelope};
use crate::http::auth::{Admin, Reader};
use crate::http::extract::{PathParams, Query};
use crate::http::ApiError;
use crate::service::rfc3339;
use crate::service::users::{
    create_user as create, delete_user as delete, update_user as update, NewUser, UserChange,
};
use crate::state::AppState;

pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// `paginate=false` answers with every user, up to this many.
pub const MAX_UNPAGINATED: usize = 10_000;

fn user_doc(u: &User) -> Value {
    json!({
        "id": u.id,
        "first_name": u.first_name,
        "last_name": u.last_name,
        "email": u.email,
        "username": u.username,
        "priv_level": priv_level(u.role),
        "role": u.role.as_str(),
        "enabled": true,
        "created": rfc3339(u.created_at),
        "updated": rfc3339(u.updated_at),
    })
}

fn priv_level(r: Role) -> &'static str {
    match r {
        Role::Owner | Role::Admin => "admin",
        Role::Member => "user",
    }
}

fn role_from_priv(p: Option<&str>) -> Result<Option<Role>, CbError> {
    match p {
        None => Ok(None),
        Some("admin") => Ok(Some(Role::Admin)),
        Some("user") => Ok(Some(Role::Member)),
        Some(_) => Err(CbError(ApiError::invalid_field(
            "priv_level",
            "must be admin or user",
        ))),
    }
}

#[derive(Deserialize)]
pub struct CbUserIn {
    pub email: Option<String>,
    pub username: Option<String>,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    pub password: Option<String>,
    pub priv_level: Option<String>,
}

#[derive(Deserialize)]
pub struct CbUserChange {
    pub email: Option<String>,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub password: Option<String>,
    pub priv_level: Option<String>,
}

async fn user_in(
    state: &AppState,
    account: &keygate_core::AccountId,
    raw: &str,
) -> Result<User, CbError> {
    let id = UserId::parse(raw).ok_or_else(|| CbError(ApiError::not_found("User")))?;
    state
        .store
        .get_user(account, &id)
        .await
        .map_err(|_| CbError(ApiError::not_found("User")))
}

#[utoipa::path(get, path = "/v2/accounts/{account_id}/users", tag = "crossbar",
    params(("account_id" = String, Path), CbPaging),
    responses((status = 200, description = "`data`: the users; `next_start_key` when more follow")))]
pub async fn list_users(
    State(state): State<AppState>,
    Cb(Reader(who)): Cb<Reader>,
    PathParams(id): PathParams<String>,
    Query(paging): Query<CbPaging>,
) -> CbResult {
    let account = visible_account(&state, &who, &id).await?;
    if paging
        .start_key
        .as_ref()
        .is_some_and(|k| UserId::parse(k).is_none())
    {
        return Err(CbError(ApiError::invalid_field(
            "start_key",
            "is not a key this server issued",
        )));
    }
    if paging.paginate == Some(false) {
        let mut users = Vec::new();
        let mut after = None;
        loop {
            let page = state
                .store
                .list_users(&account.id, &PageRequest { after, limit: 100 })
                .await?;
            users.extend(page.items.iter().map(user_doc));
            after = page.items.last().map(|u| u.id.to_string());
            if !page.has_more || users.len() >= MAX_UNPAGINATED {
                break;
            }
        }
        return Ok(Envelope::ok(users, Some(&who)));
    }
    let page_size = paging.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=100).contains(&page_size) {
        return Err(CbError(ApiError::invalid_field(
            "page_size",
            "must be between 1 and 100",
        )));
    }
    let page = state
        .store
        .list_users(
            &account.id,
            &PageRequest {
                after: paging.start_key.clone(),
                limit: page_size,
            },
        )
        .await?;
    let docs: Vec<Value> = page.items.iter().map(user_doc).collect();
    let mut env = Envelope::ok(docs, Some(&who));
    env.extra
        .insert("page_size".into(), json!(page.items.len()));
    if let Some(start) = paging.start_key {
        env.extra.insert("start_key".into(), json!(start));
    }
    if page.has_more {
        if let Some(last) = page.items.last() {
            env.extra.insert("next_start_key".into(), json!(last.id));
        }
    }
    Ok(env)
}

#[utoipa::path(put, path = "/v2/accounts/{account_id}/users", tag = "crossbar", params(("account_id" = String, Path)),
    request_body(content = serde_json::Value, description = "{\"data\": {\"first_name\", \"last_name\", \"email\", \"username\", \"password\", \"priv_level\"}}"),
    responses((status = 201, description = "the new user"), (status = 400), (status = 403)))]
pub async fn create_user(
    State(state): State<AppState>,
    Cb(Admin(who)): Cb<Admin>,
    PathParams(id): PathParams<String>,
    Data(body): Data<CbUserIn>,
) -> CbResult {
    let account = visible_account(&state, &who, &id).await?;
    let email = match (body.email, &body.username) {
        (Some(e), _) => e,
        (None, Some(u)) if u.contains('@') => u.clone(),
        (None, _) => return Err(CbError(ApiError::invalid_field("email", "is required"))),
    };
    let new = NewUser {
        email,
        username: body.username,
        first_name: body.first_name,
        last_name: body.last_name,
        role: role_from_priv(body.priv_level.as_deref())?.unwrap_or(Role::Member),
        password: body.password,
    };
    let user = create(&state, &account.id, new).await?;
    Ok(Envelope::ok(user_doc(&user), Some(&who)).created())
}

#[utoipa::path(get, path = "/v2/accounts/{account_id}/users/{user_id}", tag = "crossbar",
    params(("account_id" = String, Path), ("user_id" = String, Path)), responses((status = 200), (status = 404)))]
pub async fn get_user(
    State(state): State<AppState>,
    Cb(Reader(who)): Cb<Reader>,
    PathParams((id, user_id)): PathParams<(String, String)>,
) -> CbResult {
    let account = visible_account(&state, &who, &id).await?;
    let user = user_in(&state, &account.id, &user_id).await?;
    Ok(Envelope::ok(user_doc(&user), Some(&who)))
}

async fn change_user(state: &AppState, user: User, c: CbUserChange) -> Result<User, CbError> {
    let role = match role_from_priv(c.priv_level.as_deref())? {
        // Crossbar's `admin` level covers the owner: keep the owner an owner.
        Some(Role::Admin) if user.role == Role::Owner => None,
        other => other,
    };
    let change = UserChange {
        email: c.email,
        username: c.username,
        first_name: c.first_name,
        last_name: c.last_name,
        role,
        password: c.password,
    };
    Ok(update(state, user, change).await?)
}

#[utoipa::path(post, path = "/v2/accounts/{account_id}/users/{user_id}", tag = "crossbar",
    params(("account_id" = String, Path), ("user_id" = String, Path)),
    request_body(content = serde_json::Value, description = "{\"data\": {…the user's fields…}}"),
    responses((status = 200), (status = 400), (status = 404)))]
pub async fn replace_user(
    State(state): State<AppState>,
    Cb(Admin(who)): Cb<Admin>,
    PathParams((id, user_id)): PathParams<(String, String)>,
    Data(body): Data<CbUserChange>,
) -> CbResult {
    let account = visible_account(&state, &who, &id).await?;
    let user = user_in(&state, &account.id, &user_id).await?;
    let user = change_user(&state, user, body).await?;
    Ok(Envelope::ok(user_doc(&user), Some(&who)))
}

#[utoipa::path(patch, path = "/v2/accounts/{account_id}/users/{user_id}", tag = "crossbar",
    params(("account_id" = String, Path), ("user_id" = String, Path)),
    request_body(content = serde_json::Value, description = "{\"data\": {…fields to change…}}"),
    responses((status = 200), (status = 400), (status = 404)))]
pub async fn patch_user(
    state: State<AppState>,
    who: Cb<Admin>,
    path: PathParams<(String, String)>,
    body: Data<CbUserChange>,
) -> CbResult {
    replace_user(state, who, path, body).await
}

#[utoipa::path(delete, path = "/v2/accounts/{account_id}/users/{user_id}", tag = "crossbar",
    params(("account_id" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, description = "the deleted user"), (status = 404), (status = 409)))]
pub async fn delete_user(
    State(state): State<AppState>,
    Cb(Admin(who)): Cb<Admin>,
    PathParams((id, user_id)): PathParams<(String, String)>,
) -> CbResult {
    let account = visible_account(&state, &who, &id).await?;
    let user = user_in(&state, &account.id, &user_id).await?;
    let user = delete(&state, &account.id, &user.id).await?;
    Ok(Envelope::ok(user_doc(&user), Some(&who)))
}
