//! The pages before signing in: sign up, verify the email address, log in, log out, reset a
//! forgotten password, accept an invitation.
//!
//! What these pages say never tells whether an address has an account: signing up with a
//! known address, and asking for a reset, answer exactly as for a new one (the mail differs),
//! and a failed login says "email or password" and takes as long either way. Logins are
//! throttled per email address and client address.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use keygate_store::{LinkPurpose, Role, StoreError, User};
use serde::Deserialize;
use time::OffsetDateTime;

use super::csrf::{CsrfToken, Form};
use super::page::{ok, render, see_other, wait_text, Base, FieldErrors, PageError};
use super::session::{self, safe_next, ClientIp, SessionCookie};
use super::{links, SignupMode};
use crate::service::accounts::{self, NewAccount};
use crate::service::audit::{self, action, Actor, AuditEvent};
use crate::service::{passwords, users};
use crate::state::AppState;
use serde_json::json;

/// How many users one address may have across accounts that a login tries.
const MAX_USERS_PER_EMAIL: u32 = 5;

pub async fn home(
    State(state): State<AppState>,
    SessionCookie(cookie): SessionCookie,
) -> Result<Response, PageError> {
    let signed_in = match cookie {
        Some(token) => state
            .store
            .find_session(&session::secret_hash(&token), OffsetDateTime::now_utc())
            .await
            .is_ok(),
        None => false,
    };
    Ok(see_other(if signed_in { "/keys" } else { "/login" }, &[]))
}

/// A page before signing in that only says something: "check your email", "verified", …
#[derive(Template)]
#[template(path = "dashboard/notice.html")]
struct NoticePage {
    base: Base,
    title: String,
    lines: Vec<String>,
    action: Option<(String, String)>,
}

fn notice(
    state: &AppState,
    csrf: &CsrfToken,
    status: StatusCode,
    title: &str,
    lines: Vec<String>,
    action: Option<(&str, &str)>,
) -> Result<Response, PageError> {
    render(
        status,
        &NoticePage {
            base: Base::anonymous(state, csrf),
            title: title.to_owned(),
            lines,
            action: action.map(|(h, l)| (h.to_owned(), l.to_owned())),
        },
    )
}

fn invite_only(state: &AppState, csrf: &CsrfToken) -> Result<Response, PageError> {
    notice(
        state,
        csrf,
        StatusCode::FORBIDDEN,
        "Sign-up is by invitation",
        vec![
            "New accounts on this service are created by invitation only.".into(),
            "Ask an admin of your team to invite you, then follow the link in the email.".into(),
        ],
        Some(("/login", "Log in")),
    )
}

#[derive(Template)]
#[template(path = "dashboard/signup.html")]
struct SignupPage {
    base: Base,
    name: String,
    email: String,
    organization: String,
    errors: FieldErrors,
}

pub async fn signup_page(
    State(state): State<AppState>,
    csrf: CsrfToken,
) -> Result<Response, PageError> {
    if state.config.dashboard.signup == SignupMode::Invite {
        return invite_only(&state, &csrf);
    }
    ok(&SignupPage {
        base: Base::anonymous(&state, &csrf),
        name: String::new(),
        email: String::new(),
        organization: String::new(),
        errors: FieldErrors::default(),
    })
}

#[derive(Deserialize)]
pub struct SignupForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    organization: String,
}

/// "Ada Lovelace" → ("Ada", "Lovelace").
fn split_name(name: &str) -> (String, String) {
    let name = name.trim();
    match name.split_once(' ') {
        Some((first, last)) => (first.trim().to_owned(), last.trim().to_owned()),
        None => (name.to_owned(), String::new()),
    }
}

pub async fn signup(
    State(state): State<AppState>,
    csrf: CsrfToken,
    Form(form): Form<SignupForm>,
) -> Result<Response, PageError> {
    if state.config.dashboard.signup == SignupMode::Invite {
        return invite_only(&state, &csrf);
    }
    let mut errors = FieldErrors::default();
    if form.name.trim().is_empty() {
        errors.add("name", "Enter your name.");
    }
    if form.organization.trim().is_empty() {
        errors.add("organization", "Enter the name of your company or project.");
    }
    if let Err(e) = users::validate_email(&form.email) {
        errors.absorb(e, &[("email", "email")])?;
    }
    if let Err(e) = passwords::validate(&form.password) {
        errors.absorb(e, &[("password", "password")])?;
    }
    let email = form.email.trim().to_owned();
    let check_email = |state: &AppState, csrf: &CsrfToken| {
        notice(
            state,
            csrf,
            StatusCode::OK,
            "Check your email",
            vec![
                format!("We sent a verification link to {email}."),
                "Open it to verify your address, then log in. The link works for 48 hours.".into(),
            ],
            Some(("/login", "Go to log in")),
        )
    };
    if errors.is_empty() {
        let known = state
            .store
            .find_users_by_email(&email, 1)
            .await?
            .into_iter()
            .next();
        if known.is_some() {
            // Said exactly as for a new address; the mail tells the owner what happened.
            links::send_already_registered(&state, &email).await?;
            return check_email(&state, &csrf);
        }
        let (first_name, last_name) = split_name(&form.name);
        let signed_up = accounts::sign_up(
            &state,
            NewAccount {
                name: form.organization.clone(),
                email: email.clone(),
                plan: None,
                password: Some(form.password.clone()),
                first_name,
                last_name,
            },
        )
        .await;
        match signed_up {
            Ok((account, owner)) => {
                links::send_verification(&state, &account.id, &owner.id, &owner.email).await?;
                return check_email(&state, &csrf);
            }
            Err(e) => errors.absorb(
                e,
                &[
                    ("name", "organization"),
                    ("email", "email"),
                    ("password", "password"),
                    ("first_name", "name"),
                    ("last_name", "name"),
                ],
            )?,
        }
    }
    render(
        StatusCode::BAD_REQUEST,
        &SignupPage {
            base: Base::anonymous(&state, &csrf),
            name: form.name,
            email: form.email,
            organization: form.organization,
            errors,
        },
    )
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

fn link_expired(state: &AppState, csrf: &CsrfToken, what: &str) -> Result<Response, PageError> {
    notice(
        state,
        csrf,
        StatusCode::NOT_FOUND,
        "This link has expired",
        vec![format!(
            "The {what} link was used already, or it is too old. Links in our emails work once."
        )],
        Some(("/login", "Go to log in")),
    )
}

pub async fn verify_email(
    State(state): State<AppState>,
    csrf: CsrfToken,
    Query(q): Query<TokenQuery>,
) -> Result<Response, PageError> {
    let hash = session::secret_hash(&q.token);
    let now = crate::service::now();
    let link = match state
        .store
        .use_email_link(&hash, LinkPurpose::VerifyEmail, now)
        .await
    {
        Ok(l) => l,
        Err(StoreError::NotFound) => return link_expired(&state, &csrf, "verification"),
        Err(e) => return Err(e.into()),
    };
    let Some(user_id) = &link.user_id else {
        return link_expired(&state, &csrf, "verification");
    };
    let user = match state.store.get_user(&link.account_id, user_id).await {
        Ok(u) => u,
        Err(StoreError::NotFound) => return link_expired(&state, &csrf, "verification"),
        Err(e) => return Err(e.into()),
    };
    // A link proves the address it was sent to; the user may have changed theirs since.
    if !user.email.eq_ignore_ascii_case(&link.email) {
        return link_expired(&state, &csrf, "verification");
    }
    state
        .store
        .mark_email_verified(&user.account_id, &user.id, now)
        .await?;
    forget_user(&state, &user).await?;
    notice(
        &state,
        &csrf,
        StatusCode::OK,
        "Your email address is verified",
        vec![format!(
            "Thank you: {} is verified. You can log in now.",
            user.email
        )],
        Some(("/login", "Log in")),
    )
}

/// Cached copies of the user (the dashboard's and the API's) are dropped on every node.
async fn forget_user(state: &AppState, user: &User) -> Result<(), PageError> {
    crate::revocation::publish(
        state,
        keygate_store::RevocationKind::User,
        user.id.to_string(),
        None,
    )
    .await?;
    Ok(())
}

#[derive(Template)]
#[template(path = "dashboard/login.html")]
struct LoginPage {
    base: Base,
    email: String,
    next: String,
    errors: FieldErrors,
    signup_open: bool,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    notice: Option<String>,
    email: Option<String>,
}

pub async fn login_page(
    State(state): State<AppState>,
    csrf: CsrfToken,
    Query(q): Query<LoginQuery>,
) -> Result<Response, PageError> {
    let notice = match q.notice.as_deref() {
        Some("logged_out") => Some("You are logged out."),
        Some("password_reset") => Some("Your password is changed. Log in with the new one."),
        _ => None,
    };
    ok(&LoginPage {
        base: Base::anonymous(&state, &csrf).with_notice(notice),
        email: q.email.unwrap_or_default(),
        next: safe_next(q.next.as_deref()),
        errors: FieldErrors::default(),
        signup_open: state.config.dashboard.signup == SignupMode::Open,
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

/// The user whose password this is, among the users with this address.
async fn check_password(
    state: &AppState,
    email: &str,
    password: &str,
) -> Result<Option<User>, PageError> {
    let candidates: Vec<User> = state
        .store
        .find_users_by_email(email, MAX_USERS_PER_EMAIL)
        .await?
        .into_iter()
        .filter(|u| u.verifiers.password.is_some())
        .collect();
    let password = password.to_owned();
    let found = tokio::task::spawn_blocking(move || {
        if candidates.is_empty() {
            passwords::matches_nobody(&password);
            return None;
        }
        candidates.into_iter().find(|u| {
            u.verifiers
                .password
                .as_deref()
                .is_some_and(|phc| passwords::matches(phc, &password))
        })
    })
    .await
    .map_err(|e| PageError::Internal(anyhow::anyhow!("password check task: {e}")))?;
    Ok(found)
}

pub async fn login(
    State(state): State<AppState>,
    csrf: CsrfToken,
    ClientIp(ip): ClientIp,
    SessionCookie(previous): SessionCookie,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let next = safe_next(form.next.as_deref());
    let email = form.email.trim().to_ascii_lowercase();
    let page = |errors: FieldErrors| LoginPage {
        base: Base::anonymous(&state, &csrf),
        email: form.email.clone(),
        next: next.clone(),
        errors,
        signup_open: state.config.dashboard.signup == SignupMode::Open,
    };
    // Every attempt counts, before the (deliberately slow) password check.
    let quota = state.config.dashboard.login_limit;
    let client = ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let decision = state
        .limiter
        .check(&format!("login:{client}:{email}"), &quota, 1)
        .await;
    if !decision.allowed {
        let wait = decision.retry_after.unwrap_or(quota.period());
        tracing::warn!(client = %client, "too many dashboard login attempts");
        let mut errors = FieldErrors::default();
        errors.add(
            "form",
            format!(
                "Too many attempts. Please wait {} and try again.",
                wait_text(wait)
            ),
        );
        let mut r = render(StatusCode::TOO_MANY_REQUESTS, &page(errors))?;
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            wait.as_secs().max(1).into(),
        );
        return Ok(r);
    }
    let Some(user) = check_password(&state, &email, &form.password).await? else {
        // The address typed is kept as its domain only: the log is read by account admins,
        // and a mistyped address may be someone else's.
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let event = AuditEvent::without_object(action::LOGIN_FAILED, "user").details(
            json!({"method": "dashboard", "reason": "wrong credentials", "email_domain": domain}),
        );
        audit::record(&state, event).await;
        let mut errors = FieldErrors::default();
        errors.add("form", "Incorrect email or password.");
        return render(StatusCode::UNAUTHORIZED, &page(errors));
    };
    let account = state.store.get_account(&user.account_id).await?;
    if account.status != keygate_store::AccountStatus::Active {
        let event = AuditEvent::new(action::LOGIN_FAILED, "user", &user.id)
            .account(Some(&account.id))
            .actor(Actor::user(&user.id))
            .details(json!({"method": "dashboard", "reason": "account disabled"}));
        audit::record(&state, event).await;
        let mut errors = FieldErrors::default();
        errors.add("form", "This account is disabled.");
        return render(StatusCode::FORBIDDEN, &page(errors));
    }
    if user.email_verified_at.is_none() {
        links::send_verification(&state, &user.account_id, &user.id, &user.email).await?;
        return notice(
            &state,
            &csrf,
            StatusCode::FORBIDDEN,
            "Verify your email address first",
            vec![
                format!("We sent a new verification link to {}.", user.email),
                "Open it, then log in again.".into(),
            ],
            None,
        );
    }
    // A new session each time (no fixation); the browser's previous one, if any, ends.
    if let Some(token) = previous {
        state
            .store
            .delete_session(&session::secret_hash(&token))
            .await?;
    }
    let cookie = session::start(&state, &user).await?;
    let event = AuditEvent::new(action::LOGIN_SUCCEEDED, "user", &user.id)
        .account(Some(&account.id))
        .actor(Actor::user(&user.id))
        .details(json!({"method": "dashboard"}));
    audit::record(&state, event).await;
    Ok(see_other(&next, &[cookie]))
}

pub async fn logout(
    State(state): State<AppState>,
    SessionCookie(cookie): SessionCookie,
    Form(_): Form<serde::de::IgnoredAny>,
) -> Result<Response, PageError> {
    let clear = session::end(&state, cookie.as_deref()).await?;
    Ok(see_other("/login?notice=logged_out", &[clear]))
}

#[derive(Template)]
#[template(path = "dashboard/forgot.html")]
struct ForgotPage {
    base: Base,
    email: String,
    errors: FieldErrors,
}

pub async fn forgot_page(
    State(state): State<AppState>,
    csrf: CsrfToken,
) -> Result<Response, PageError> {
    ok(&ForgotPage {
        base: Base::anonymous(&state, &csrf),
        email: String::new(),
        errors: FieldErrors::default(),
    })
}

#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    email: String,
}

pub async fn forgot(
    State(state): State<AppState>,
    csrf: CsrfToken,
    Form(form): Form<ForgotForm>,
) -> Result<Response, PageError> {
    let email = match users::validate_email(&form.email) {
        Ok(e) => e,
        Err(e) => {
            let mut errors = FieldErrors::default();
            errors.absorb(e, &[("email", "email")])?;
            return render(
                StatusCode::BAD_REQUEST,
                &ForgotPage {
                    base: Base::anonymous(&state, &csrf),
                    email: form.email,
                    errors,
                },
            );
        }
    };
    // A few mails per address an hour, whoever asks: nobody can flood an inbox from here.
    let quota = keygate_core::gcra::Quota::new(3, std::time::Duration::from_secs(3600))
        .map_err(|e| PageError::Internal(anyhow::anyhow!("{e}")))?;
    let key = format!("reset-mail:{}", email.to_ascii_lowercase());
    if state.limiter.check(&key, &quota, 1).await.allowed {
        for user in state
            .store
            .find_users_by_email(&email, MAX_USERS_PER_EMAIL)
            .await?
        {
            links::send_reset(&state, &user.account_id, &user.id, &user.email).await?;
        }
    }
    notice(
        &state,
        &csrf,
        StatusCode::OK,
        "Check your email",
        vec![
            format!("If an account uses {email}, we sent it a link to choose a new password."),
            "The link works once, for one hour.".into(),
        ],
        Some(("/login", "Back to log in")),
    )
}

#[derive(Template)]
#[template(path = "dashboard/reset.html")]
struct ResetPage {
    base: Base,
    token: String,
    email: String,
    errors: FieldErrors,
}

pub async fn reset_page(
    State(state): State<AppState>,
    csrf: CsrfToken,
    Query(q): Query<TokenQuery>,
) -> Result<Response, PageError> {
    let hash = session::secret_hash(&q.token);
    match state
        .store
        .find_email_link(&hash, LinkPurpose::ResetPassword, OffsetDateTime::now_utc())
        .await
    {
        Ok(link) => ok(&ResetPage {
            base: Base::anonymous(&state, &csrf),
            token: q.token,
            email: link.email,
            errors: FieldErrors::default(),
        }),
        Err(StoreError::NotFound) => link_expired(&state, &csrf, "password reset"),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

pub async fn reset(
    State(state): State<AppState>,
    csrf: CsrfToken,
    Form(form): Form<ResetForm>,
) -> Result<Response, PageError> {
    let hash = session::secret_hash(&form.token);
    let mut errors = FieldErrors::default();
    if let Err(e) = passwords::validate(&form.password) {
        errors.absorb(e, &[("password", "password")])?;
    } else if form.password != form.confirm {
        errors.add("confirm", "The two passwords differ.");
    }
    if !errors.is_empty() {
        let link = match state
            .store
            .find_email_link(&hash, LinkPurpose::ResetPassword, OffsetDateTime::now_utc())
            .await
        {
            Ok(l) => l,
            Err(StoreError::NotFound) => return link_expired(&state, &csrf, "password reset"),
            Err(e) => return Err(e.into()),
        };
        return render(
            StatusCode::BAD_REQUEST,
            &ResetPage {
                base: Base::anonymous(&state, &csrf),
                token: form.token,
                email: link.email,
                errors,
            },
        );
    }
    let now = crate::service::now();
    let link = match state
        .store
        .use_email_link(&hash, LinkPurpose::ResetPassword, now)
        .await
    {
        Ok(l) => l,
        Err(StoreError::NotFound) => return link_expired(&state, &csrf, "password reset"),
        Err(e) => return Err(e.into()),
    };
    let Some(user_id) = &link.user_id else {
        return link_expired(&state, &csrf, "password reset");
    };
    let user = match state.store.get_user(&link.account_id, user_id).await {
        Ok(u) => u,
        Err(StoreError::NotFound) => return link_expired(&state, &csrf, "password reset"),
        Err(e) => return Err(e.into()),
    };
    let user = users::update_user(
        &state,
        user,
        users::UserChange {
            password: Some(form.password),
            ..Default::default()
        },
    )
    .await?;
    let event = AuditEvent::new(action::PASSWORD_RESET, "user", &user.id)
        .account(Some(&user.account_id))
        .actor(Actor::user(&user.id))
        .details(json!({"method": "mailed link"}));
    audit::record(&state, event).await;
    // Reading the mail proved the address, and every other browser is signed out.
    if user.email.eq_ignore_ascii_case(&link.email) && user.email_verified_at.is_none() {
        state
            .store
            .mark_email_verified(&user.account_id, &user.id, now)
            .await?;
        forget_user(&state, &user).await?;
    }
    let ended = state
        .store
        .delete_user_sessions(&user.account_id, &user.id)
        .await?;
    tracing::info!(user_id = %user.id, sessions_ended = ended, "dashboard password reset");
    Ok(see_other("/login?notice=password_reset", &[]))
}

#[derive(Template)]
#[template(path = "dashboard/invite.html")]
struct InvitePage {
    base: Base,
    token: String,
    email: String,
    account: String,
    role: &'static str,
    name: String,
    errors: FieldErrors,
}

pub async fn invite_page(
    State(state): State<AppState>,
    csrf: CsrfToken,
    Query(q): Query<TokenQuery>,
) -> Result<Response, PageError> {
    let hash = session::secret_hash(&q.token);
    let link = match state
        .store
        .find_email_link(&hash, LinkPurpose::Invite, OffsetDateTime::now_utc())
        .await
    {
        Ok(l) => l,
        Err(StoreError::NotFound) => return link_expired(&state, &csrf, "invitation"),
        Err(e) => return Err(e.into()),
    };
    let account = state.store.get_account(&link.account_id).await?;
    ok(&InvitePage {
        base: Base::anonymous(&state, &csrf),
        token: q.token,
        email: link.email,
        account: account.name,
        role: super::page::role_label(link.role.unwrap_or(Role::Member)),
        name: String::new(),
        errors: FieldErrors::default(),
    })
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

pub async fn accept_invite(
    State(state): State<AppState>,
    csrf: CsrfToken,
    Form(form): Form<InviteForm>,
) -> Result<Response, PageError> {
    let hash = session::secret_hash(&form.token);
    let pending = match state
        .store
        .find_email_link(&hash, LinkPurpose::Invite, OffsetDateTime::now_utc())
        .await
    {
        Ok(l) => l,
        Err(StoreError::NotFound) => return link_expired(&state, &csrf, "invitation"),
        Err(e) => return Err(e.into()),
    };
    let account = state.store.get_account(&pending.account_id).await?;
    let role = pending.role.unwrap_or(Role::Member);
    let mut errors = FieldErrors::default();
    if form.name.trim().is_empty() {
        errors.add("name", "Enter your name.");
    }
    if let Err(e) = passwords::validate(&form.password) {
        errors.absorb(e, &[("password", "password")])?;
    }
    let (first_name, last_name) = split_name(&form.name);
    let built = if errors.is_empty() {
        match users::build_user(
            &state,
            &account.id,
            users::NewUser {
                email: pending.email.clone(),
                username: None,
                first_name,
                last_name,
                role,
                password: Some(form.password.clone()),
            },
        )
        .await
        {
            Ok(u) => Some(u),
            Err(e) => {
                errors.absorb(
                    e,
                    &[
                        ("first_name", "name"),
                        ("last_name", "name"),
                        ("password", "password"),
                    ],
                )?;
                None
            }
        }
    } else {
        None
    };
    let Some(mut user) = built else {
        return render(
            StatusCode::BAD_REQUEST,
            &InvitePage {
                base: Base::anonymous(&state, &csrf),
                token: form.token,
                email: pending.email,
                account: account.name,
                role: super::page::role_label(role),
                name: form.name,
                errors,
            },
        );
    };
    let now = crate::service::now();
    if state
        .store
        .use_email_link(&hash, LinkPurpose::Invite, now)
        .await
        .is_err()
    {
        return link_expired(&state, &csrf, "invitation");
    }
    // The invitation was read at this address: it is verified.
    user.email_verified_at = Some(now);
    match state.store.create_user(&user).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return notice(
                &state,
                &csrf,
                StatusCode::CONFLICT,
                "You are already a member",
                vec![format!(
                    "{} already has a user in {}. Log in instead.",
                    user.email, account.name
                )],
                Some(("/login", "Log in")),
            )
        }
        Err(e) => return Err(e.into()),
    }
    crate::webhooks::events::user_created(&state, &user).await;
    tracing::info!(account_id = %account.id, user_id = %user.id, "invitation accepted");
    let cookie = session::start(&state, &user).await?;
    Ok(see_other("/keys", &[cookie]))
}
