//! Typed identifiers. Every id is a UUID (v7 for new ids, so they sort by
//! creation time); the newtypes keep a tenant id from being passed where a
//! credential id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

use crate::error::Error;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered (UUID v7) id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID (as read from storage).
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Parses an id sent by a client; `field` names the request field
            /// for the error.
            pub fn parse(text: &str, field: &'static str) -> Result<Self, Error> {
                Uuid::parse_str(text.trim())
                    .map(Self)
                    .map_err(|_| Error::invalid(field, concat!("not a valid ", $what, " id (expected a UUID)")))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::parse(s, $what)
            }
        }
    };
}

id_type!(
    /// Identifies a tenant.
    TenantId,
    "tenant"
);
id_type!(
    /// Identifies a principal within its tenant.
    PrincipalId,
    "principal"
);
id_type!(
    /// Identifies a credential within its tenant.
    CredentialId,
    "credential"
);
id_type!(
    /// Identifies a grant.
    GrantId,
    "grant"
);
id_type!(
    /// Identifies an identity binding.
    BindingId,
    "identity binding"
);
id_type!(
    /// Identifies an audit event.
    EventId,
    "event"
);
id_type!(
    /// Identifies a lease on a revealed value.
    LeaseId,
    "lease"
);
id_type!(
    /// Identifies an access request.
    AccessRequestId,
    "access request"
);
id_type!(
    /// Identifies a notifier delivery.
    DeliveryId,
    "delivery"
);
