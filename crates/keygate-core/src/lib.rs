//! Keygate's pure logic: nothing here does I/O, so all of it is unit-tested and benchmarked on
//! its own. The server, the stores and the gateway build on these types.

pub mod base62;
pub mod gcra;
pub mod id;
pub mod key;
pub mod scope;
pub mod webhook;

pub use id::{AccountId, DeliveryId, EndpointId, EventId, KeyId, UserId};
pub use key::{Environment, KeyFormatError, KeyHash, ParsedKey};
pub use scope::Scope;
