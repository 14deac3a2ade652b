//! What every surface shares: the error type and its native body, the JSON and query
//! extractors that turn bad input into that body, request ids, paging, and authentication.

pub mod auth;
pub mod client;
pub mod error;
pub mod extract;
pub mod frame;
pub mod paging;
pub mod request_id;
pub mod security;

pub use error::ApiError;
