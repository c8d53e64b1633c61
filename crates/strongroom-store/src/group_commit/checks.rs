//! The reveal-check rule: what must still hold, when a reveal's audit event
//! commits, for the reveal to be returned (see
//! [`strongroom_core::store::RevealCheck`]).
//!
//! [`States::violation`] is the rule, for both backends: each dialect only
//! reads the stored rows a batch's checks name ([`CheckIds`]) into
//! [`States`], matching them by tenant and id and judging nothing. The one
//! other statement of the rule is Postgres' one-round-trip path, where the
//! database runs it (`append_checked_events`, migration
//! `20261206000003_reveal_checks_bindings`, as replaced last by
//! `20261210010001_reveal_check_lookups`) and a failing check sends the
//! batch here, to the full path, which names the reason; that function must
//! refuse at least what [`States::violation`] refuses.

use std::collections::HashMap;

use strongroom_core::store::RevealCheck;
use strongroom_core::time::Timestamp;

use super::Work;

/// A credential's state as a reveal check reads it.
#[derive(sqlx::FromRow)]
pub(crate) struct CredentialState {
    pub id: uuid::Uuid,
    pub status: String,
    pub current_version: i32,
    pub destroyed_at: Option<i64>,
    pub expires_at: Option<i64>,
}

/// A principal's state, with its tenant's status, as a reveal check reads
/// it.
#[derive(sqlx::FromRow)]
pub(crate) struct PrincipalState {
    pub id: uuid::Uuid,
    pub status: String,
    pub role: String,
    pub tenant_status: String,
}

/// A grant's state as a reveal check reads it.
#[derive(sqlx::FromRow)]
pub(crate) struct GrantState {
    pub id: uuid::Uuid,
    pub expires_at: Option<i64>,
}

/// An identity binding's state as a reveal check reads it.
#[derive(sqlx::FromRow)]
pub(crate) struct BindingState {
    pub id: uuid::Uuid,
    pub principal_id: uuid::Uuid,
    /// Why authentication ignores the binding, if it does.
    pub disabled_reason: Option<String>,
}

/// The stored states a batch of reveal checks depends on: the rows of the
/// checks' tenant with the ids [`CheckIds`] names (absent: no such row).
#[derive(Default)]
pub struct States {
    credentials: HashMap<uuid::Uuid, CredentialState>,
    principals: HashMap<uuid::Uuid, PrincipalState>,
    grants: HashMap<uuid::Uuid, GrantState>,
    bindings: HashMap<uuid::Uuid, BindingState>,
}

impl States {
    /// Adds a credential's state.
    pub(crate) fn credential(&mut self, state: CredentialState) {
        self.credentials.insert(state.id, state);
    }

    /// Adds a principal's state.
    pub(crate) fn principal(&mut self, state: PrincipalState) {
        self.principals.insert(state.id, state);
    }

    /// Adds a grant's state.
    pub(crate) fn grant(&mut self, state: GrantState) {
        self.grants.insert(state.id, state);
    }

    /// Adds an identity binding's state.
    pub(crate) fn binding(&mut self, state: BindingState) {
        self.bindings.insert(state.id, state);
    }

    /// Why `check` no longer holds at `now`, if it does not: the
    /// credential must still exist, be active, undestroyed and unexpired,
    /// at the version revealed; the principal must still exist, be active,
    /// with the role it was authorized with, in an active tenant; the grant,
    /// if one allowed the reveal, must still exist and not have expired; the
    /// identity binding, if known, must still exist, be enabled and bind the
    /// principal.
    pub fn violation(&self, check: &RevealCheck, now: Timestamp) -> Option<&'static str> {
        let now = now.as_micros();
        let Some(c) = self.credentials.get(&check.credential.as_uuid()) else {
            return Some("the credential no longer exists");
        };
        if c.status != "active"
            || c.destroyed_at.is_some()
            || c.expires_at.is_some_and(|t| now >= t)
        {
            return Some("the credential is no longer usable");
        }
        if i64::from(c.current_version) != i64::from(check.version) {
            return Some("the credential was rotated");
        }
        let Some(p) = self.principals.get(&check.principal.as_uuid()) else {
            return Some("the principal no longer exists");
        };
        if p.status != "active" || p.role != check.role.as_str() || p.tenant_status != "active" {
            return Some("the principal or its tenant changed");
        }
        if let Some(g) = check.grant {
            match self.grants.get(&g.as_uuid()) {
                None => return Some("the grant was revoked"),
                Some(g) if g.expires_at.is_some_and(|t| now >= t) => {
                    return Some("the grant expired");
                }
                Some(_) => {}
            }
        }
        if let Some(b) = check.binding
            && !self.bindings.get(&b.as_uuid()).is_some_and(|b| {
                b.disabled_reason.is_none() && b.principal_id == check.principal.as_uuid()
            })
        {
            return Some("the caller's identity binding was deleted");
        }
        None
    }
}

/// The distinct ids the reveal checks of a batch depend on, each sorted.
#[derive(Default)]
pub struct CheckIds {
    pub credentials: Vec<uuid::Uuid>,
    pub principals: Vec<uuid::Uuid>,
    pub grants: Vec<uuid::Uuid>,
    pub bindings: Vec<uuid::Uuid>,
}

impl CheckIds {
    /// The ids the reveals among `works` name.
    pub fn of(works: &[Work]) -> Self {
        Self::of_checks(works.iter().filter_map(|w| match w {
            Work::Reveal(c, _) => Some(c),
            _ => None,
        }))
    }

    /// The ids `checks` name.
    pub fn of_checks<'a>(checks: impl IntoIterator<Item = &'a RevealCheck>) -> Self {
        let mut ids = Self::default();
        for c in checks {
            ids.credentials.push(c.credential.as_uuid());
            ids.principals.push(c.principal.as_uuid());
            ids.grants.extend(c.grant.map(|g| g.as_uuid()));
            ids.bindings.extend(c.binding.map(|b| b.as_uuid()));
        }
        for list in [
            &mut ids.credentials,
            &mut ids.principals,
            &mut ids.grants,
            &mut ids.bindings,
        ] {
            list.sort_unstable();
            list.dedup();
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use strongroom_core::ids::{BindingId, CredentialId, GrantId, PrincipalId};
    use strongroom_core::principal::Role;

    use super::*;

    const NOW: i64 = 1_000_000;

    fn at(micros: i64) -> Timestamp {
        Timestamp::from_micros(micros)
    }

    /// A check with a grant and a binding, and states under which it holds.
    fn holding() -> (RevealCheck, States) {
        let check = RevealCheck {
            credential: CredentialId::generate(),
            version: 3,
            principal: PrincipalId::generate(),
            role: Role::Agent,
            grant: Some(GrantId::generate()),
            binding: Some(BindingId::generate()),
        };
        let mut states = States::default();
        states.credential(CredentialState {
            id: check.credential.as_uuid(),
            status: "active".into(),
            current_version: 3,
            destroyed_at: None,
            expires_at: Some(NOW + 1),
        });
        states.principal(PrincipalState {
            id: check.principal.as_uuid(),
            status: "active".into(),
            role: "agent".into(),
            tenant_status: "active".into(),
        });
        states.grant(GrantState {
            id: check.grant.map(|g| g.as_uuid()).unwrap_or_default(),
            expires_at: Some(NOW + 1),
        });
        states.binding(BindingState {
            id: check.binding.map(|b| b.as_uuid()).unwrap_or_default(),
            principal_id: check.principal.as_uuid(),
            disabled_reason: None,
        });
        (check, states)
    }

    #[test]
    fn a_check_holds_while_nothing_changed() {
        let (check, states) = holding();
        assert_eq!(states.violation(&check, at(NOW)), None);
        let bare = RevealCheck {
            grant: None,
            binding: None,
            ..check
        };
        assert_eq!(states.violation(&bare, at(NOW)), None);
    }

    #[test]
    fn every_condition_of_the_rule_refuses() {
        type Change = fn(&mut States);
        let changes: [(&str, Change); 13] = [
            ("credential gone", |s| s.credentials.clear()),
            ("credential revoked", |s| {
                s.credentials
                    .values_mut()
                    .for_each(|c| c.status = "revoked".into());
            }),
            ("credential destroyed", |s| {
                s.credentials
                    .values_mut()
                    .for_each(|c| c.destroyed_at = Some(1));
            }),
            ("credential expired", |s| {
                s.credentials
                    .values_mut()
                    .for_each(|c| c.expires_at = Some(NOW));
            }),
            ("credential rotated", |s| {
                s.credentials
                    .values_mut()
                    .for_each(|c| c.current_version = 4);
            }),
            ("principal gone", |s| s.principals.clear()),
            ("principal disabled", |s| {
                s.principals
                    .values_mut()
                    .for_each(|p| p.status = "disabled".into());
            }),
            ("role changed", |s| {
                s.principals
                    .values_mut()
                    .for_each(|p| p.role = "viewer".into());
            }),
            ("tenant suspended", |s| {
                s.principals
                    .values_mut()
                    .for_each(|p| p.tenant_status = "suspended".into());
            }),
            ("grant revoked", |s| s.grants.clear()),
            ("grant expired", |s| {
                s.grants.values_mut().for_each(|g| g.expires_at = Some(NOW));
            }),
            ("binding deleted", |s| s.bindings.clear()),
            ("binding disabled", |s| {
                s.bindings
                    .values_mut()
                    .for_each(|b| b.disabled_reason = Some("x".into()));
            }),
        ];
        for (what, change) in changes {
            let (check, mut states) = holding();
            change(&mut states);
            assert!(states.violation(&check, at(NOW)).is_some(), "{what}");
        }
        let (check, mut states) = holding();
        states
            .bindings
            .values_mut()
            .for_each(|b| b.principal_id = uuid::Uuid::new_v4());
        assert_eq!(
            states.violation(&check, at(NOW)),
            Some("the caller's identity binding was deleted"),
            "binding moved to another principal"
        );
    }

    #[test]
    fn check_ids_are_distinct_and_sorted() {
        let (check, _) = holding();
        let other = RevealCheck {
            credential: CredentialId::generate(),
            grant: None,
            ..check.clone()
        };
        let works = [
            Work::Reveal(check.clone(), None),
            Work::Append,
            Work::Reveal(other.clone(), None),
            Work::Reveal(check.clone(), None),
        ];
        let ids = CheckIds::of(&works);
        let mut credentials = vec![check.credential.as_uuid(), other.credential.as_uuid()];
        credentials.sort_unstable();
        assert_eq!(ids.credentials, credentials);
        assert_eq!(ids.principals, vec![check.principal.as_uuid()]);
        assert_eq!(ids.grants.len(), 1);
        assert_eq!(ids.bindings.len(), 1);
    }
}
