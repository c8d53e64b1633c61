//! The rotation monitor's records: the reminders it sends (due soon,
//! overdue, expired), each at most once per window of a credential, and
//! the storage port that keeps that state ([`RotationStore`]).
//!
//! A reminder's window is the date it is about: the rotation due date for
//! `due_soon` and `overdue` (a rotation, or a new schedule, moves it and
//! opens a new window), the `expires_at` for `expired`. The store keeps one
//! row per (credential, reminder, window), written in the same transaction
//! as the reminder's delivery row and audit events, so a monitor that
//! restarts, or a second server's monitor, never sends one twice.

use async_trait::async_trait;

use crate::audit::AuditDraft;
use crate::credential::{Credential, RotationStatus};
use crate::error::Result;
use crate::ids::{CredentialId, TenantId};
use crate::notify::NewDelivery;
use crate::scope::SystemScope;
use crate::tenant::Tenant;
use crate::time::Timestamp;

/// Which reminder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReminderKind {
    /// The credential entered its reminder window.
    DueSoon,
    /// The credential is past its rotation due date.
    Overdue,
    /// The credential is past its `expires_at` (and was marked expired).
    Expired,
}

impl ReminderKind {
    /// Stable text form, as stored.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::DueSoon => "due_soon",
            Self::Overdue => "overdue",
            Self::Expired => "expired",
        }
    }

    /// Parses the stable text form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "due_soon" => Some(Self::DueSoon),
            "overdue" => Some(Self::Overdue),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }

    /// The notifier event that tells of it.
    pub const fn event(&self) -> &'static str {
        match self {
            Self::DueSoon => "credential.rotation_due_soon",
            Self::Overdue => "credential.rotation_overdue",
            Self::Expired => "credential.expired",
        }
    }

    /// The reminder a rotation status calls for, if any.
    pub const fn of_status(status: RotationStatus) -> Option<Self> {
        match status {
            RotationStatus::Healthy => None,
            RotationStatus::DueSoon => Some(Self::DueSoon),
            RotationStatus::Overdue => Some(Self::Overdue),
        }
    }
}

/// A credential the monitor watches, with the reminders already recorded
/// for it.
#[derive(Debug, Clone)]
pub struct Monitored {
    /// The credential (active, undestroyed).
    pub credential: Credential,
    /// The reminders recorded for it: which, and their windows.
    pub reminded: Vec<(ReminderKind, Timestamp)>,
}

impl Monitored {
    /// Whether `kind` was already recorded for `window`.
    pub fn was_reminded(&self, kind: ReminderKind, window: Timestamp) -> bool {
        self.reminded.contains(&(kind, window))
    }
}

/// A reminder to record.
#[derive(Debug, Clone)]
pub struct Reminder {
    /// The credential.
    pub credential: CredentialId,
    /// Which reminder.
    pub kind: ReminderKind,
    /// The date it is about (see the module docs).
    pub window: Timestamp,
    /// The delivery to enqueue (the tenant has a notifier).
    pub delivery: Option<NewDelivery>,
    /// Its audit events, in order (`credential.expire` first for an
    /// expired credential, then `credential.rotation_reminder`).
    pub events: Vec<AuditDraft>,
}

/// The rotation monitor's storage port. Only the server's monitor calls it
/// (it takes the monitor's [`SystemScope`]).
#[async_trait]
pub trait RotationStore: Send + Sync {
    /// Up to `limit` active tenants, ordered by id, after `after`.
    async fn monitored_tenants(
        &self,
        system: &SystemScope,
        after: Option<TenantId>,
        limit: u32,
    ) -> Result<Vec<Tenant>>;

    /// Up to `limit` of `tenant`'s active, undestroyed credentials, ordered
    /// by id, after `after`, each with the reminders recorded for it.
    async fn monitored_credentials(
        &self,
        system: &SystemScope,
        tenant: TenantId,
        after: Option<CredentialId>,
        limit: u32,
    ) -> Result<Vec<Monitored>>;

    /// Records `reminders` of `tenant` in one transaction, each with its
    /// delivery and events unless its (credential, kind, window) is already
    /// recorded; an expired reminder also marks its credential expired, and
    /// is skipped if the credential is no longer active. Returns, for each
    /// reminder, whether it was recorded now; `None` (nothing written) if
    /// another server's monitor holds the monitor lock.
    async fn record_reminders(
        &self,
        system: &SystemScope,
        tenant: TenantId,
        reminders: &[Reminder],
        now: Timestamp,
    ) -> Result<Option<Vec<bool>>>;
}
