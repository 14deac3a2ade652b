//! Credits: what a call costs and what an account has. The balance and its append-only ledger
//! change together in the store; here we decide what to apply: operator grants, per-call
//! debits (idempotent by request id or the client's `Idempotency-Key`), and the plan's monthly
//! top-up, applied lazily the first time an account's credits are touched in a new month.

use keygate_core::{AccountId, KeyId};
use keygate_store::{CreditEntry, CreditKind, CreditOutcome, CreditState};
use time::OffsetDateTime;

use super::audit::{self, action, AuditEvent};
use crate::http::ApiError;
use crate::state::AppState;

pub fn period_of(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

/// The first day of the month after `t`, where the next top-up happens.
pub fn next_reset(t: OffsetDateTime) -> time::Date {
    let (y, m) = match t.month() {
        time::Month::December => (t.year() + 1, time::Month::January),
        m => (t.year(), m.next()),
    };
    time::Date::from_calendar_date(y, m, 1).unwrap_or(t.date())
}

fn entry(
    account: &AccountId,
    amount: i64,
    kind: CreditKind,
    key: String,
    description: String,
    key_id: Option<KeyId>,
) -> CreditEntry {
    CreditEntry {
        id: format!("led_{}", uuid::Uuid::now_v7().simple()),
        account_id: account.clone(),
        amount,
        balance_after: 0,
        kind,
        idempotency_key: key,
        description,
        key_id,
        created_at: crate::service::now(),
    }
}

/// Applies the plan's monthly top-up once per month. Remembered per node, so this costs one
/// database write per account per month, not one per call.
pub async fn refill_if_due(
    state: &AppState,
    account: &AccountId,
    plan: &str,
) -> Result<(), ApiError> {
    let Some(allowance) = state.config.plans.get(plan).and_then(|p| p.monthly_credits) else {
        return Ok(());
    };
    let period = period_of(OffsetDateTime::now_utc());
    let marker = (account.clone(), period.clone());
    if state.refilled.contains_key(&marker) {
        return Ok(());
    }
    let template = entry(
        account,
        0,
        CreditKind::Refill,
        String::new(),
        format!("{plan} plan: monthly credits"),
        None,
    );
    if let Some(e) = state
        .store
        .refill_credits(account, &period, allowance as i64, &template)
        .await?
    {
        tracing::info!(account_id = %account, amount = e.amount, "monthly credits refilled");
    }
    state.refilled.insert(marker, ());
    Ok(())
}

pub async fn state_of(
    state: &AppState,
    account: &AccountId,
    plan: &str,
) -> Result<CreditState, ApiError> {
    refill_if_due(state, account, plan).await?;
    Ok(state.store.credit_state(account).await?)
}

/// Debits `cost` credits for one call; 402 when the balance is short. A retried call with the
/// same idempotency key is debited once.
pub async fn debit(
    state: &AppState,
    account: &AccountId,
    plan: &str,
    cost: u64,
    idempotency_key: String,
    key_id: Option<&KeyId>,
    description: String,
) -> Result<CreditEntry, ApiError> {
    refill_if_due(state, account, plan).await?;
    let e = entry(
        account,
        -(cost as i64),
        CreditKind::Debit,
        idempotency_key,
        description,
        key_id.cloned(),
    );
    match state.store.apply_credit(&e).await? {
        CreditOutcome::Applied(e) => {
            crate::webhooks::events::credits_debited(state, account, plan, e.balance_after).await;
            Ok(e)
        }
        CreditOutcome::Duplicate(e) => Ok(e),
        CreditOutcome::Insufficient { available } => Err(ApiError::InsufficientCredits {
            needed: cost,
            available,
        }),
    }
}

/// An operator's grant; `(entry, false)` when the idempotency key was used before. The month's
/// top-up is applied first, so a grant adds to the allowance instead of being absorbed by it.
pub async fn grant(
    state: &AppState,
    account: &AccountId,
    plan: &str,
    amount: u64,
    idempotency_key: String,
    description: String,
) -> Result<(CreditEntry, bool), ApiError> {
    refill_if_due(state, account, plan).await?;
    let e = entry(
        account,
        amount as i64,
        CreditKind::Grant,
        idempotency_key,
        description,
        None,
    );
    match state.store.apply_credit(&e).await? {
        CreditOutcome::Applied(e) => {
            let event = AuditEvent::new(action::CREDITS_GRANTED, "credits", &e.id)
                .account(Some(account))
                .details(serde_json::json!({
                    "amount": e.amount,
                    "balance_after": e.balance_after,
                    "description": e.description,
                }));
            audit::record(state, event).await;
            Ok((e, true))
        }
        CreditOutcome::Duplicate(e) => Ok((e, false)),
        CreditOutcome::Insufficient { .. } => {
            Err(ApiError::Internal(anyhow::anyhow!("a grant was refused")))
        }
    }
}

/// The credit cost of a call, from the configured `"METHOD /prefix"` costs: the longest
/// matching prefix wins; `*` matches any method.
pub fn cost_of(state: &AppState, method: &str, path: &str) -> u64 {
    state
        .config
        .route_costs
        .iter()
        .filter(|(m, prefix, _)| {
            (m == "*" || m.eq_ignore_ascii_case(method)) && path.starts_with(prefix.as_str())
        })
        .max_by_key(|(_, prefix, _)| prefix.len())
        .map_or(0, |(_, _, cost)| *cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_reset_dates_follow_the_calendar() {
        let t = time::macros::datetime!(2026-12-31 23:59 UTC);
        assert_eq!(period_of(t), "2026-12");
        assert_eq!(next_reset(t), time::macros::date!(2027 - 01 - 01));
        assert_eq!(
            next_reset(time::macros::datetime!(2026-02-10 0:00 UTC)),
            time::macros::date!(2026 - 03 - 01)
        );
    }
}
