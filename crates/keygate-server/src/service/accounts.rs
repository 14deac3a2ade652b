//! Accounts: a tenant of the deployment. Creating one also creates its owner (username = the
//! email, lower-cased) and a first admin key, in one transaction.

use keygate_core::key::GeneratedKey;
use keygate_core::{AccountId, Environment, Scope};
use keygate_store::{Account, AccountStatus, ApiKey, Role, User};

use super::audit::{self, action, AuditEvent};
use super::keys::{build_key, KeySpec};
use super::now;
use super::users::{build_user, validate_email, NewUser};
use crate::http::ApiError;
use crate::state::AppState;

pub struct NewAccount {
    pub name: String,
    pub email: String,
    pub plan: Option<String>,
    pub password: Option<String>,
    pub first_name: String,
    pub last_name: String,
}

pub struct CreatedAccount {
    pub account: Account,
    pub owner: User,
    pub key: ApiKey,
    pub plaintext: GeneratedKey,
}

pub fn validate_account_name(name: &str) -> Result<String, ApiError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 100 printable characters",
        ));
    }
    Ok(n.to_owned())
}

/// A plan the configuration defines.
pub fn validate_plan(state: &AppState, plan: &str) -> Result<String, ApiError> {
    if state.config.plans.contains_key(plan) {
        Ok(plan.to_owned())
    } else {
        let known: Vec<&str> = state.config.plans.keys().map(String::as_str).collect();
        Err(ApiError::invalid_field(
            "plan",
            format!("must be one of: {}", known.join(", ")),
        ))
    }
}

pub async fn create_account(state: &AppState, new: NewAccount) -> Result<CreatedAccount, ApiError> {
    let (account, owner) = build_account(state, new).await?;
    let spec = KeySpec {
        name: "Default key".into(),
        description: "Created with the account".into(),
        scope: Scope::Admin,
        environment: Environment::Live,
        expires_at: None,
        metadata: serde_json::json!({}),
        rate_limit: None,
        permissions: Vec::new(),
    };
    let (key, plaintext) = build_key(state, Some(&account.id), Some(&owner.id), spec)?;
    let account = Account {
        api_key_id: Some(key.id.clone()),
        ..account
    };
    state.store.create_account(&account, &owner, &key).await?;
    tracing::info!(account_id = %account.id, "account created");
    let event = AuditEvent::new(action::ACCOUNT_CREATED, "account", &account.id)
        .account(Some(&account.id))
        .details(serde_json::json!({
            "name": account.name,
            "plan": account.plan,
            "owner_id": owner.id,
            "first_key_id": key.id,
        }));
    audit::record(state, event).await;
    Ok(CreatedAccount {
        account,
        owner,
        key,
        plaintext,
    })
}

/// A validated account and its owner (the password hashed), not yet stored.
async fn build_account(state: &AppState, new: NewAccount) -> Result<(Account, User), ApiError> {
    let at = now();
    let account = Account {
        id: AccountId::generate(),
        name: validate_account_name(&new.name)?,
        email: validate_email(&new.email)?,
        plan: validate_plan(
            state,
            new.plan.as_deref().unwrap_or(&state.config.default_plan),
        )?,
        status: AccountStatus::Active,
        api_key_id: None,
        created_at: at,
        updated_at: at,
    };
    let owner = build_user(
        state,
        &account.id,
        NewUser {
            email: account.email.clone(),
            username: None,
            first_name: new.first_name,
            last_name: new.last_name,
            role: Role::Owner,
            password: new.password,
        },
    )
    .await?;
    Ok((account, owner))
}

/// A dashboard sign-up: the account and its owner, without a key; the owner creates the keys
/// they need, and sees each one once.
pub async fn sign_up(state: &AppState, new: NewAccount) -> Result<(Account, User), ApiError> {
    let (account, owner) = build_account(state, new).await?;
    state
        .store
        .create_account_with_owner(&account, &owner)
        .await?;
    tracing::info!(account_id = %account.id, "account signed up");
    let event = AuditEvent::new(action::ACCOUNT_CREATED, "account", &account.id)
        .account(Some(&account.id))
        .actor(audit::Actor::user(&owner.id))
        .details(serde_json::json!({
            "name": account.name,
            "plan": account.plan,
            "owner_id": owner.id,
            "signed_up": true,
        }));
    audit::record(state, event).await;
    Ok((account, owner))
}

/// Saves a changed account and records what changed: `account.plan_changed`,
/// `account.status_changed`, and `account.updated` naming the other fields.
pub async fn update_account(
    state: &AppState,
    before: &Account,
    after: &Account,
) -> Result<(), ApiError> {
    save_account(state, after).await?;
    let event = |name| AuditEvent::new(name, "account", &after.id).account(Some(&after.id));
    if before.plan != after.plan {
        let details = serde_json::json!({"from": before.plan, "to": after.plan});
        audit::record(state, event(action::ACCOUNT_PLAN_CHANGED).details(details)).await;
    }
    if before.status != after.status {
        let details =
            serde_json::json!({"from": before.status.as_str(), "to": after.status.as_str()});
        audit::record(
            state,
            event(action::ACCOUNT_STATUS_CHANGED).details(details),
        )
        .await;
    }
    let fields: Vec<&str> = [
        ("name", before.name != after.name),
        ("email", before.email != after.email),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect();
    if !fields.is_empty() {
        let details = serde_json::json!({"fields": fields});
        audit::record(state, event(action::ACCOUNT_UPDATED).details(details)).await;
    }
    Ok(())
}

/// Disabling or deleting an account changes what every one of its cached keys means.
pub async fn save_account(state: &AppState, account: &Account) -> Result<(), ApiError> {
    state.store.update_account(account).await?;
    forget_account(state, &account.id).await
}

pub async fn delete_account(state: &AppState, id: &AccountId) -> Result<(), ApiError> {
    state
        .store
        .delete_account(id)
        .await
        .map_err(|_| ApiError::not_found("Account"))?;
    forget_account(state, id).await?;
    tracing::info!(account_id = %id, "account deleted");
    audit::record(
        state,
        AuditEvent::new(action::ACCOUNT_DELETED, "account", id).account(Some(id)),
    )
    .await;
    Ok(())
}

/// An operator key, created by `keygate admin create-operator-key`.
pub async fn create_operator_key(
    state: &AppState,
    name: &str,
) -> Result<(ApiKey, GeneratedKey), ApiError> {
    let spec = KeySpec {
        name: super::keys::validate_key_name(name)?,
        description: "Operator key".into(),
        scope: Scope::Admin,
        environment: Environment::Live,
        expires_at: None,
        metadata: serde_json::json!({}),
        rate_limit: None,
        permissions: Vec::new(),
    };
    super::keys::create_key(state, None, None, spec).await
}

async fn forget_account(state: &AppState, id: &AccountId) -> Result<(), ApiError> {
    crate::revocation::publish(
        state,
        keygate_store::RevocationKind::Account,
        id.to_string(),
        None,
    )
    .await?;
    Ok(())
}
