//! Signed webhooks with durable delivery, to the Standard Webhooks specification.
//!
//! - [`endpoints`]: `/api/v1/webhooks`, the endpoints of an account, their secrets, the
//!   deliveries log and replays;
//! - [`events`]: `POST /api/v1/events` and Keygate's own events;
//! - [`worker`]: the leased delivery worker every node runs, and `key.expiring`;
//! - [`client`]: one attempt over HTTP(S), with the destination checked after DNS resolution.
//!
//! The storage side (the outbox and its leases) is `keygate_store::WebhookStore`; signing,
//! the retry schedule and the destination rules are pure functions in `keygate_core::webhook`.

pub mod client;
pub mod endpoints;
pub mod events;
pub mod worker;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            endpoints::list_endpoints,
            endpoints::create_endpoint
        ))
        .routes(routes!(
            endpoints::get_endpoint,
            endpoints::update_endpoint,
            endpoints::delete_endpoint
        ))
        .routes(routes!(endpoints::enable_endpoint))
        .routes(routes!(endpoints::disable_endpoint))
        .routes(routes!(endpoints::rotate_secret))
        .routes(routes!(endpoints::test_endpoint))
        .routes(routes!(endpoints::list_deliveries))
        .routes(routes!(endpoints::replay_delivery))
        .routes(routes!(events::publish_event))
}
