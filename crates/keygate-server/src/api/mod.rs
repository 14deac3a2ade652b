//! The native API, `/api/v1`: JSON in and out, errors in the body of DESIGN.md.

pub mod accounts;
pub mod audit;
pub mod credits;
pub mod keys;
pub mod me;
pub mod tokens;
pub mod usage;
pub mod users;
pub mod verify;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me::me))
        .routes(routes!(tokens::create_token, tokens::delete_token))
        .routes(routes!(tokens::jwks))
        .routes(routes!(keys::list_keys, keys::create_key))
        .routes(routes!(keys::get_key, keys::update_key, keys::revoke_key))
        .routes(routes!(keys::roll_key))
        .routes(routes!(accounts::list_accounts, accounts::create_account))
        .routes(routes!(
            accounts::get_account,
            accounts::update_account,
            accounts::delete_account
        ))
        .routes(routes!(credits::get_credits))
        .routes(routes!(credits::credit_usage))
        .routes(routes!(credits::grant_credits))
        .routes(routes!(usage::get_usage))
        .routes(routes!(verify::verify_key))
        .routes(routes!(audit::list_audit_log))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(
            users::get_user,
            users::update_user,
            users::delete_user
        ))
}
