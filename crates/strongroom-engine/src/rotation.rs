//! Rotation: the monitor's pass (credentials past `expires_at` marked
//! expired; `due_soon`, `overdue` and `expired` reminders recorded once per
//! window, each with its notifier delivery when the tenant has a notifier,
//! its audit events and a log line) and the rotation status overview.
//!
//! Statuses are computed from each credential's last rotation (its
//! `rotated_at`) under its own rotation policy or its tenant's default, as
//! of the engine's clock. What was already reminded is stored (see
//! `strongroom_core::rotation`), so a monitor that restarts, or another
//! server's monitor, sends nothing twice.

use std::collections::BTreeMap;

use strongroom_core::audit::{Action, AuditDetail, Outcome};
use strongroom_core::credential::{
    Credential, CredentialFilter, CredentialStatus, RotationPolicy, RotationStatus,
};
use strongroom_core::ids::{CredentialId, TenantId};
use strongroom_core::names::{Environment, ServiceLabel};
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::policy::Capability;
use strongroom_core::principal::Role;
use strongroom_core::rotation::{Monitored, Reminder, ReminderKind};
use strongroom_core::scope::{Authenticated, SystemScope};
use strongroom_core::store::Change;
use strongroom_core::tenant::{Tenant, TenantStatus};
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};

use crate::notify::{RotationNotice, rotation_delivery};
use crate::{CallContext, Engine};

/// Tenants read per page by the monitor.
const TENANT_BATCH: u32 = 100;

/// Credentials read (and reminders recorded, in one transaction) per page
/// by the monitor.
const CREDENTIAL_BATCH: u32 = 500;

/// Credentials read per page by the overview.
const OVERVIEW_BATCH: u32 = 500;

/// Where a credential stands in the overview: its rotation status while
/// active, else its lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverviewStatus {
    /// Active, rotated on time.
    Healthy,
    /// Active, within its reminder window.
    DueSoon,
    /// Active, past its rotation due date.
    Overdue,
    /// Past its `expires_at`.
    Expired,
    /// Revoked.
    Revoked,
}

impl OverviewStatus {
    /// The place of `credential` as of `now` under `tenant_default`.
    pub fn of(credential: &Credential, tenant_default: &RotationPolicy, now: Timestamp) -> Self {
        match credential.effective_status(now) {
            CredentialStatus::Revoked => Self::Revoked,
            CredentialStatus::Expired => Self::Expired,
            CredentialStatus::Active => {
                match credential.rotation_state(tenant_default, now).status {
                    RotationStatus::Healthy => Self::Healthy,
                    RotationStatus::DueSoon => Self::DueSoon,
                    RotationStatus::Overdue => Self::Overdue,
                }
            }
        }
    }
}

/// Credential counts by overview status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotationCounts {
    /// Active, rotated on time.
    pub healthy: u64,
    /// Active, within the reminder window.
    pub due_soon: u64,
    /// Active, past the due date.
    pub overdue: u64,
    /// Expired.
    pub expired: u64,
    /// Revoked.
    pub revoked: u64,
}

impl RotationCounts {
    fn add(&mut self, status: OverviewStatus) {
        let n = match status {
            OverviewStatus::Healthy => &mut self.healthy,
            OverviewStatus::DueSoon => &mut self.due_soon,
            OverviewStatus::Overdue => &mut self.overdue,
            OverviewStatus::Expired => &mut self.expired,
            OverviewStatus::Revoked => &mut self.revoked,
        };
        *n += 1;
    }
}

/// What the overview covers.
#[derive(Debug, Clone, Default)]
pub struct RotationOverviewFilter {
    /// Only this environment.
    pub environment: Option<Environment>,
    /// Only this service.
    pub service: Option<ServiceLabel>,
    /// Which credentials the page lists; `None`: due soon and overdue.
    pub status: Option<OverviewStatus>,
}

/// The rotation status overview: the dashboard's data.
#[derive(Debug, Clone)]
pub struct RotationOverview {
    /// Counts of every credential the caller sees (within the environment
    /// and service filters).
    pub counts: RotationCounts,
    /// The same, by (environment, service), in that order.
    pub groups: Vec<((Environment, ServiceLabel), RotationCounts)>,
    /// The page of credentials the status filter chooses, earliest due
    /// first.
    pub page: Page<Credential>,
}

/// The overview's cursor: a credential's due date and id.
fn cursor(credential: &Credential, policy: &RotationPolicy) -> String {
    let due = credential
        .rotation_state(policy, credential.rotated_at)
        .due_at;
    format!("{}.{}", due.as_micros(), credential.id)
}

/// Parses an overview cursor.
fn parse_cursor(text: &str) -> Result<(i64, uuid::Uuid)> {
    let invalid = || Error::invalid("page_token", "is not a valid page token");
    let (due, id) = text.split_once('.').ok_or_else(invalid)?;
    let due = due.parse::<i64>().map_err(|_| invalid())?;
    let id = uuid::Uuid::parse_str(id).map_err(|_| invalid())?;
    Ok((due, id))
}

impl Engine {
    /// The rotation monitor's one pass over every active tenant: each
    /// credential past `expires_at` marked expired, and the reminders due
    /// now recorded (once per window), with their deliveries and events;
    /// each new one logged. Returns how many reminders it recorded; stops
    /// early when another server's monitor is working.
    pub async fn monitor_rotation(&self, system: &SystemScope) -> Result<u32> {
        let now = self.now();
        let mut total = 0u32;
        let mut after = None;
        loop {
            let tenants = self
                .store
                .monitored_tenants(system, after, TENANT_BATCH)
                .await?;
            for tenant in &tenants {
                if tenant.status != TenantStatus::Active {
                    continue;
                }
                match self.monitor_tenant(system, tenant, now).await? {
                    Some(n) => total += n,
                    None => return Ok(total),
                }
            }
            match tenants.last() {
                Some(t) if tenants.len() == TENANT_BATCH as usize => after = Some(t.id),
                _ => return Ok(total),
            }
        }
    }

    /// One tenant's part of the pass; `None` if another monitor holds the
    /// lock.
    async fn monitor_tenant(
        &self,
        system: &SystemScope,
        tenant: &Tenant,
        now: Timestamp,
    ) -> Result<Option<u32>> {
        let mut total = 0u32;
        let mut after: Option<CredentialId> = None;
        loop {
            let page = self
                .store
                .monitored_credentials(system, tenant.id, after, CREDENTIAL_BATCH)
                .await?;
            let due: Vec<(Reminder, &Monitored)> = page
                .iter()
                .filter_map(|m| self.reminder_due(system, tenant, m, now).map(|r| (r, m)))
                .collect();
            if !due.is_empty() {
                let reminders: Vec<Reminder> = due.iter().map(|(r, _)| r.clone()).collect();
                let Some(recorded) = self
                    .durable(
                        self.store
                            .record_reminders(system, tenant.id, &reminders, now),
                    )
                    .await?
                else {
                    return Ok(None);
                };
                for ((r, m), new) in due.iter().zip(recorded) {
                    if new {
                        total += 1;
                        self.log_reminder(tenant.id, r, &m.credential);
                        if r.delivery.is_some() {
                            self.wake_notifier();
                        }
                        if r.kind == ReminderKind::Expired {
                            self.changed(Change::Credential(tenant.id, r.credential));
                        }
                    }
                }
            }
            match page.last() {
                Some(m) if page.len() == CREDENTIAL_BATCH as usize => {
                    after = Some(m.credential.id);
                }
                _ => return Ok(Some(total)),
            }
        }
    }

    /// The reminder `m` calls for now, unless already recorded.
    fn reminder_due(
        &self,
        system: &SystemScope,
        tenant: &Tenant,
        m: &Monitored,
        now: Timestamp,
    ) -> Option<Reminder> {
        let c = &m.credential;
        let state = c.rotation_state(&tenant.settings.rotation, now);
        let (kind, window) = match c.expires_at {
            Some(at) if now >= at => (ReminderKind::Expired, at),
            _ => (ReminderKind::of_status(state.status)?, state.due_at),
        };
        if m.was_reminded(kind, window) {
            return None;
        }
        let delivery = tenant
            .settings
            .notifier
            .as_ref()
            .map(|_| rotation_delivery(&RotationNotice::of(c, &state, kind), kind, now));
        let stamp = |action| {
            let mut d = system.audit_at(action, Outcome::Allowed, "", now);
            d.credential = Some(c.id);
            d.credential_name = Some(c.name.to_string());
            d.environment = Some(c.environment.to_string());
            d
        };
        let mut events = Vec::with_capacity(2);
        if kind == ReminderKind::Expired {
            events.push(stamp(Action::CredentialExpire));
        }
        let mut reminder = stamp(Action::CredentialRotationReminder);
        reminder.detail = Some(AuditDetail::RotationReminder {
            reminder: kind.as_str().to_owned(),
            window,
            delivery: delivery.as_ref().map(|d| d.id),
        });
        events.push(reminder);
        Some(Reminder {
            credential: c.id,
            kind,
            window,
            delivery,
            events,
        })
    }

    /// The log sink of a reminder: who, what, when due; never a value.
    fn log_reminder(&self, tenant: TenantId, r: &Reminder, c: &Credential) {
        tracing::info!(
            tenant = %tenant,
            credential_id = %c.id,
            credential = %c.name,
            environment = %c.environment,
            service = %c.service,
            reminder = r.kind.as_str(),
            window = r.window.to_unix().0,
            notified = r.delivery.is_some(),
            "rotation reminder"
        );
    }

    /// The rotation status overview (admins, operators and viewers): the
    /// counts of the credentials the caller may list, in all and by
    /// environment and service, and a page of the credentials the filter's
    /// status chooses (by default those due soon or overdue), earliest due
    /// first. A caller confined to environments sees those only.
    pub async fn rotation_overview(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        filter: &RotationOverviewFilter,
        page: &PageRequest,
    ) -> Result<RotationOverview> {
        let scope = caller.tenant_scope()?;
        self.require_role(
            &scope,
            ctx,
            Action::RotationOverview,
            &[Role::Admin, Role::Operator, Role::Viewer],
        )
        .await?;
        let after = page.after.as_deref().map(parse_cursor).transpose()?;
        let now = self.now();
        let policy = scope.tenant().settings.rotation;
        let listing = self
            .listing(&scope, scope.principal(), Capability::List)
            .await?;
        let visible = listing.narrow(CredentialFilter {
            environment: filter.environment.clone(),
            service: filter.service.clone(),
            ..CredentialFilter::default()
        });
        let mut counts = RotationCounts::default();
        let mut groups: BTreeMap<(Environment, ServiceLabel), RotationCounts> = BTreeMap::new();
        let mut listed: Vec<(i64, Credential)> = Vec::new();
        let mut request = PageRequest::first(OVERVIEW_BATCH);
        loop {
            let batch = self
                .store
                .list_credentials(&scope, &visible, &request)
                .await?;
            for c in batch.items {
                if !listing.shows(&c) {
                    continue;
                }
                let status = OverviewStatus::of(&c, &policy, now);
                counts.add(status);
                groups
                    .entry((c.environment.clone(), c.service.clone()))
                    .or_default()
                    .add(status);
                let chosen = match filter.status {
                    None => matches!(status, OverviewStatus::DueSoon | OverviewStatus::Overdue),
                    Some(s) => s == status,
                };
                let due = c.rotation_state(&policy, now).due_at.as_micros();
                let past_cursor = after.is_none_or(|(d, id)| (due, c.id.as_uuid()) > (d, id));
                if chosen && past_cursor {
                    listed.push((due, c));
                }
            }
            match batch.next {
                Some(next) => request.after = Some(next),
                None => break,
            }
        }
        listed.sort_by_key(|(due, c)| (*due, c.id.as_uuid()));
        let rows: Vec<Credential> = listed
            .into_iter()
            .take(page.size as usize + 1)
            .map(|(_, c)| c)
            .collect();
        Ok(RotationOverview {
            counts,
            groups: groups.into_iter().collect(),
            page: Page::from_rows(rows, page.size, |c| cursor(c, &policy)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_roundtrip_and_refuse_garbage() {
        let id = uuid::Uuid::from_u128(7);
        assert_eq!(
            parse_cursor(&format!("123.{id}")).expect("cursor"),
            (123, id)
        );
        for bad in ["", "123", "x.y", &format!("abc.{id}"), "1.not-a-uuid"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }
}
