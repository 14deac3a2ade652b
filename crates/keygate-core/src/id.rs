//! Typed identifiers. Every id is a short type prefix and a UUIDv7 in lowercase hex, so ids sort
//! by creation time (cursor paging walks them in order) and an account id can never be passed
//! where a key id is expected. Parsing is strict: anything else is "not found", never an error
//! from deeper down.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! typed_id {
    ($name:ident, $prefix:literal) => {
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id; ids made later sort after ids made earlier.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            /// Accepts exactly `<prefix><32 lowercase hex>`.
            pub fn parse(s: &str) -> Option<Self> {
                let hex = s.strip_prefix($prefix)?;
                let ok = hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                ok.then(|| Self(s.to_owned()))
            }

            /// Wraps a value read back from our own storage, which only ever holds parsed ids.
            pub fn from_trusted(s: String) -> Self {
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(concat!("not a valid ", stringify!($name)))
                })
            }
        }
    };
}

typed_id!(AccountId, "acct_");
typed_id!(UserId, "user_");
typed_id!(KeyId, "key_");
typed_id!(EndpointId, "ep_");
// An event, and the `webhook-id` of every delivery of it (Standard Webhooks' `msg_` ids).
typed_id!(EventId, "msg_");
typed_id!(DeliveryId, "dlv_");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_sort_by_creation() {
        let a = KeyId::generate();
        let b = KeyId::generate();
        assert_eq!(KeyId::parse(a.as_str()), Some(a.clone()));
        assert!(a < b);
    }

    #[test]
    fn ids_of_another_type_or_shape_are_refused() {
        let account = AccountId::generate();
        assert_eq!(KeyId::parse(account.as_str()), None);
        assert_eq!(KeyId::parse("key_"), None);
        assert_eq!(KeyId::parse("key_../../etc/passwd"), None);
        assert_eq!(KeyId::parse(&format!("key_{}", "A".repeat(32))), None);
        assert_eq!(KeyId::parse(&"key_0".repeat(10_000)), None);
    }
}
