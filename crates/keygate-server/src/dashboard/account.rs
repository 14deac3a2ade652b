//! The Account page: the account and its plan, and, for its owner and admins, its users with
//! their roles and a form to invite more.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use keygate_store::{PageRequest, Role};
use serde::Deserialize;

use super::csrf::{CsrfToken, Form};
use super::page::{date, ok, render, role_label, see_other, Base, FieldErrors, PageError};
use super::session::{DashboardAdmin, DashboardUser};
use crate::service::users;
use crate::state::AppState;

pub struct UserRow {
    pub name: String,
    pub email: String,
    pub role: &'static str,
    pub verified: bool,
    pub joined: String,
    pub is_me: bool,
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
