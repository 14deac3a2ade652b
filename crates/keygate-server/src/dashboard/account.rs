//! The Account page: the account and its plan, and, for its owner and admins, its users with
//! their roles: changing a role, removing a user (after a confirmation), inviting more. Nobody
//! changes their own role or removes themselves here, and the owner stays the owner (the user
//! service's rules).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use keygate_core::UserId;
use keygate_store::{PageRequest, Role, User};
use serde::Deserialize;

use super::csrf::{CsrfToken, Form};
use super::page::{date, ok, render, role_label, see_other, Base, FieldErrors, PageError};
use super::session::{DashboardAdmin, DashboardUser};
use crate::service::users;
use crate::state::AppState;

pub struct UserRow {
    pub id: String,
    pub name: String,
    pub email: String,
    pub role: &'static str,
    pub verified: bool,
    pub joined: String,
    pub is_me: bool,
    /// An admin may change this user's role and remove them.
    pub manageable: bool,
    pub is_admin_role: bool,
}

#[derive(Template)]
#[template(path = "dashboard/account.html")]
struct AccountPage {
    base: Base,
    account_name: String,
    account_id: String,
    created: String,
    plan: String,
    rate_limit: String,
    monthly_credits: Option<u64>,
    my_role: &'static str,
    is_admin: bool,
    users: Vec<UserRow>,
    invite_email: String,
    invite_role: String,
    errors: FieldErrors,
}

#[derive(Deserialize)]
pub struct AccountQuery {
    notice: Option<String>,
}

async fn page(
    state: &AppState,
    csrf: &CsrfToken,
    me: &DashboardUser,
    notice: Option<&str>,
    invite: (String, String),
    errors: FieldErrors,
) -> Result<AccountPage, PageError> {
    let users = if me.is_admin() {
        state
            .store
            .list_users(
                &me.account.id,
                &PageRequest {
                    after: None,
                    limit: 200,
                },
            )
            .await?
            .items
            .into_iter()
            .map(|u| UserRow {
                id: u.id.to_string(),
                manageable: u.id != me.user.id && u.role != Role::Owner,
                is_admin_role: u.role == Role::Admin,
                name: format!("{} {}", u.first_name, u.last_name)
                    .trim()
                    .to_owned(),
                email: u.email.clone(),
                role: role_label(u.role),
                verified: u.email_verified_at.is_some(),
                joined: date(u.created_at),
                is_me: u.id == me.user.id,
            })
            .collect()
    } else {
        Vec::new()
    };
    let plan = state.config.plans.get(&me.account.plan);
    Ok(AccountPage {
        base: Base::signed_in(state, csrf, me, "/account").with_notice(notice),
        account_name: me.account.name.clone(),
        account_id: me.account.id.to_string(),
        created: date(me.account.created_at),
        plan: me.account.plan.clone(),
        rate_limit: plan.map_or_else(|| "—".into(), |p| p.rate_limit.to_string()),
        monthly_credits: plan.and_then(|p| p.monthly_credits),
        my_role: role_label(me.user.role),
        is_admin: me.is_admin(),
        users,
        invite_email: invite.0,
        invite_role: invite.1,
        errors,
    })
}

pub async fn account_page(
    State(state): State<AppState>,
    csrf: CsrfToken,
    me: DashboardUser,
    Query(q): Query<AccountQuery>,
) -> Result<Response, PageError> {
    let notice = match q.notice.as_deref() {
        Some("invited") => Some("Invitation sent. The link in it works for 7 days."),
        Some("role_changed") => Some("The role is changed. It applies from their next request."),
        Some("removed") => Some("The user is removed and signed out."),
        _ => None,
    };
    ok(&page(
        &state,
        &csrf,
        &me,
        notice,
        (String::new(), "member".into()),
        FieldErrors::default(),
    )
    .await?)
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

pub async fn invite_user(
    State(state): State<AppState>,
    csrf: CsrfToken,
    DashboardAdmin(me): DashboardAdmin,
    Form(form): Form<InviteForm>,
) -> Result<Response, PageError> {
    let mut errors = FieldErrors::default();
    let role = match form.role.as_str() {
        "member" => Some(Role::Member),
        "admin" => Some(Role::Admin),
        _ => {
            errors.add("role", "Choose member or admin.");
            None
        }
    };
    let email = match users::validate_email(&form.email) {
        Ok(e) => Some(e),
        Err(e) => {
            errors.absorb(e, &[("email", "email")])?;
            None
        }
    };
    if let (Some(email), Some(role)) = (&email, role) {
        let taken = state
            .store
            .find_user_by_username(&me.account.id, email)
            .await
            .is_ok();
        if taken {
            errors.add("email", "This person is already a user of the account.");
        } else {
            super::links::send_invite(&state, &me.account, &me.user, email, role).await?;
            return Ok(see_other("/account?notice=invited", &[]));
        }
    }
    render(
        StatusCode::BAD_REQUEST,
        &page(&state, &csrf, &me, None, (form.email, form.role), errors).await?,
    )
}

/// Another user of the admin's account whom they may manage: not themselves, not the owner.
async fn manageable_user(
    state: &AppState,
    me: &DashboardUser,
    id: &str,
) -> Result<User, PageError> {
    let id = UserId::parse(id).ok_or(PageError::NotFound)?;
    let user = state
        .store
        .get_user(&me.account.id, &id)
        .await
        .map_err(|_| PageError::NotFound)?;
    if user.id == me.user.id {
        return Err(PageError::Forbidden(
            "You cannot change your own role or remove yourself.".into(),
        ));
    }
    if user.role == Role::Owner {
        return Err(PageError::Forbidden(
            "The account's owner keeps their role.".into(),
        ));
    }
    Ok(user)
}

#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    role: String,
}

pub async fn change_role(
    State(state): State<AppState>,
    DashboardAdmin(me): DashboardAdmin,
    Path(id): Path<String>,
    Form(form): Form<RoleForm>,
) -> Result<Response, PageError> {
    let user = manageable_user(&state, &me, &id).await?;
    let role = match form.role.as_str() {
        "member" => Role::Member,
        "admin" => Role::Admin,
        _ => return Err(PageError::BadRequest("Choose member or admin.".into())),
    };
    users::update_user(
        &state,
        user,
        users::UserChange {
            role: Some(role),
            ..Default::default()
        },
    )
    .await?;
    Ok(see_other("/account?notice=role_changed", &[]))
}

#[derive(Template)]
#[template(path = "dashboard/user_remove.html")]
struct RemovePage {
    base: Base,
    id: String,
    name: String,
    email: String,
    account: String,
}

pub async fn confirm_remove(
    State(state): State<AppState>,
    csrf: CsrfToken,
    DashboardAdmin(me): DashboardAdmin,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let user = manageable_user(&state, &me, &id).await?;
    ok(&RemovePage {
        base: Base::signed_in(&state, &csrf, &me, "/account"),
        id: user.id.to_string(),
        name: format!("{} {}", user.first_name, user.last_name)
            .trim()
            .to_owned(),
        email: user.email,
        account: me.account.name.clone(),
    })
}

pub async fn remove_user(
    State(state): State<AppState>,
    DashboardAdmin(me): DashboardAdmin,
    Path(id): Path<String>,
    Form(_): Form<serde::de::IgnoredAny>,
) -> Result<Response, PageError> {
    let user = manageable_user(&state, &me, &id).await?;
    // Their sessions go with them (the store cascades), and caches forget them.
    users::delete_user(&state, &me.account.id, &user.id).await?;
    tracing::info!(user_id = %user.id, "user removed from the dashboard");
    Ok(see_other("/account?notice=removed", &[]))
}
