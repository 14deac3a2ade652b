//! Users: people of an account. The username is unique within the account and lower-cased; it
//! defaults to the email address.

use keygate_core::{AccountId, UserId};
use keygate_store::{PasswordVerifiers, Role, User};

use super::audit::{self, action, AuditEvent};
use super::{now, passwords};
use crate::http::ApiError;
use crate::state::AppState;

pub struct NewUser {
    pub email: String,
    pub username: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub role: Role,
    pub password: Option<String>,
}

pub fn validate_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email.to_owned())
    } else {
        Err(ApiError::invalid_field(
            "email",
            "is not a valid email address",
        ))
    }
}

pub fn validate_username(username: &str) -> Result<String, ApiError> {
    let u = username.trim().to_lowercase();
    if u.is_empty()
        || u.chars().count() > 254
        || u.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':')
    {
        return Err(ApiError::invalid_field(
            "username",
            "must be 1 to 254 characters without spaces or ':'",
        ));
    }
    Ok(u)
}

pub fn validate_name(field: &str, value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    if v.chars().count() > 100 || v.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            field,
            "must be at most 100 printable characters",
        ));
    }
    Ok(v.to_owned())
}

/// Builds a validated user record (the password hashed) without storing it.
pub async fn build_user(
    state: &AppState,
    account: &AccountId,
    new: NewUser,
) -> Result<User, ApiError> {
    let email = validate_email(&new.email)?;
    let username = validate_username(new.username.as_deref().unwrap_or(&email))?;
    let verifiers = match &new.password {
        Some(pw) => {
            passwords::verifiers_for(state.tokens.credential_pepper(), &username, pw).await?
        }
        None => PasswordVerifiers::default(),
    };
    let at = now();
    Ok(User {
        id: UserId::generate(),
        account_id: account.clone(),
        email,
        username,
        first_name: validate_name("first_name", &new.first_name)?,
        last_name: validate_name("last_name", &new.last_name)?,
        role: new.role,
        verifiers,
        email_verified_at: None,
        created_at: at,
        updated_at: at,
    })
}

pub async fn create_user(
    state: &AppState,
    account: &AccountId,
    new: NewUser,
) -> Result<User, ApiError> {
    let user = build_user(state, account, new).await?;
    state.store.create_user(&user).await?;
    let event = AuditEvent::new(action::USER_CREATED, "user", &user.id)
        .account(Some(account))
        .details(serde_json::json!({"username": user.username, "role": user.role.as_str()}));
    audit::record(state, event).await;
    crate::webhooks::events::user_created(state, &user).await;
    Ok(user)
}

/// What may change on a user; `None` leaves a field as it is.
#[derive(Default)]
pub struct UserChange {
    pub email: Option<String>,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Option<Role>,
    pub password: Option<String>,
}

pub async fn update_user(
    state: &AppState,
    mut user: User,
    change: UserChange,
) -> Result<User, ApiError> {
    let before = user.clone();
    let password_changed = change.password.is_some();
    if let Some(email) = change.email {
        user.email = validate_email(&email)?;
    }
    let renamed = match change.username {
        Some(u) => {
            let u = validate_username(&u)?;
            let renamed = u != user.username;
            user.username = u;
            renamed
        }
        None => false,
    };
    if let Some(v) = change.first_name {
        user.first_name = validate_name("first_name", &v)?;
    }
    if let Some(v) = change.last_name {
        user.last_name = validate_name("last_name", &v)?;
    }
    if let Some(role) = change.role {
        if user.role == Role::Owner && role != Role::Owner {
            return Err(ApiError::conflict(
                "the account owner's role cannot be changed",
            ));
        }
        if role == Role::Owner && user.role != Role::Owner {
            return Err(ApiError::invalid_field(
                "role",
                "there is one owner per account",
            ));
        }
        user.role = role;
    }
    match change.password {
        Some(pw) => {
            user.verifiers =
                passwords::verifiers_for(state.tokens.credential_pepper(), &user.username, &pw)
                    .await?
        }
        // The Crossbar digests include the username: a new username without a new password
        // leaves them unable to match, so they are dropped rather than kept wrong.
        None if renamed => {
            user.verifiers.md5 = None;
            user.verifiers.sha1 = None;
        }
        None => {}
    }
    user.updated_at = now();
    state.store.update_user(&user).await?;
    forget_user(state, &user.id).await?;
    record_user_changes(state, &before, &user, password_changed).await;
    Ok(user)
}

pub async fn delete_user(
    state: &AppState,
    account: &AccountId,
    id: &UserId,
) -> Result<User, ApiError> {
    let user = state
        .store
        .get_user(account, id)
        .await
        .map_err(|_| ApiError::not_found("User"))?;
    if user.role == Role::Owner {
        return Err(ApiError::conflict("the account owner cannot be deleted"));
    }
    state.store.delete_user(account, id).await?;
    forget_user(state, id).await?;
    let event = AuditEvent::new(action::USER_DELETED, "user", id)
        .account(Some(account))
        .details(serde_json::json!({"username": user.username}));
    audit::record(state, event).await;
    Ok(user)
}

/// `user.role_changed`, `user.password_changed` and `user.updated` (naming the other fields).
async fn record_user_changes(
    state: &AppState,
    before: &User,
    after: &User,
    password_changed: bool,
) {
    let event = |name| AuditEvent::new(name, "user", &after.id).account(Some(&after.account_id));
    if before.role != after.role {
        audit::record(
            state,
            event(action::USER_ROLE_CHANGED).details(
                serde_json::json!({"from": before.role.as_str(), "to": after.role.as_str()}),
            ),
        )
        .await;
    }
    if password_changed {
        audit::record(state, event(action::USER_PASSWORD_CHANGED)).await;
    }
    let fields: Vec<&str> = [
        ("email", before.email != after.email),
        ("username", before.username != after.username),
        ("first_name", before.first_name != after.first_name),
        ("last_name", before.last_name != after.last_name),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect();
    if !fields.is_empty() {
        audit::record(
            state,
            event(action::USER_UPDATED).details(serde_json::json!({"fields": fields})),
        )
        .await;
    }
}

/// Drops the user from every node's cache: their tokens are re-checked on the next request.
async fn forget_user(state: &AppState, id: &keygate_core::UserId) -> Result<(), ApiError> {
    crate::revocation::publish(
        state,
        keygate_store::RevocationKind::User,
        id.to_string(),
        None,
    )
    .await?;
    Ok(())
}
