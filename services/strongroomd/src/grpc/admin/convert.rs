//! AdminService's wire conversions: tenants, their settings and identity
//! bindings.

use std::time::Duration;

use strongroom_core::Error;
use strongroom_core::Result;
use strongroom_core::ids::TenantId;
use strongroom_core::principal::{IdentityBinding, IdentityPattern};
use strongroom_core::tenant::{DenialAlert, RateLimit, Tenant, TenantSettings, TenantStatus};
use strongroom_proto::v1 as pb;

pub use crate::grpc::convert::*;

/// A tenant as returned.
pub fn tenant_out(t: &Tenant) -> pb::Tenant {
    pb::Tenant {
        id: t.id.to_string(),
        name: t.name.to_string(),
        description: String::new(),
        status: match t.status {
            TenantStatus::Active => pb::TenantStatus::Active,
            TenantStatus::Suspended => pb::TenantStatus::Suspended,
            TenantStatus::Shredded => pb::TenantStatus::Shredded,
        } as i32,
        status_reason: String::new(),
        created_at: Some(time_out(t.created_at)),
        status_changed_at: None,
        kek_version: t.current_kek_version,
        identity_namespaces: Vec::new(),
    }
}

/// A tenant as returned to platform operators, with its identity
/// namespaces (of `namespaces`, which may hold other tenants').
pub fn tenant_with_namespaces(
    t: &Tenant,
    namespaces: &[(TenantId, IdentityPattern)],
) -> pb::Tenant {
    pb::Tenant {
        identity_namespaces: namespaces
            .iter()
            .filter(|(id, _)| *id == t.id)
            .map(|(_, n)| n.to_text())
            .collect(),
        ..tenant_out(t)
    }
}

/// Tenant settings as returned, with the server's `limits` (lease TTLs,
/// and the access request TTL in force).
pub fn settings_out(s: &TenantSettings, limits: &strongroom_engine::Limits) -> pb::TenantSettings {
    let default_ttl = limits.default_lease_ttl;
    let max_ttl = limits.max_lease_ttl;
    pb::TenantSettings {
        version_retention: s.version_retention,
        default_rotation_policy: Some(rotation_out(&s.rotation)),
        max_value_size_bytes: s.max_value_bytes,
        default_lease_ttl: Some(duration_out(default_ttl)),
        max_lease_ttl: Some(duration_out(max_ttl)),
        denied_call_limit: Some(rate_limit_out(s.denied_call_limit)),
        call_limit: Some(rate_limit_out(s.call_limit)),
        denial_alert: Some(pb::DenialAlert {
            threshold: s.denial_alert.threshold,
            window: Some(duration_out(Duration::from_secs(u64::from(
                s.denial_alert.window_secs,
            )))),
            auto_lock: s.denial_alert.auto_lock,
        }),
        revoke_grant_on_leak: s.revoke_grant_on_leak,
        notifier: s.notifier.as_ref().map(|n| pb::Notifier {
            url: n.url.clone(),
            signing_secret: Default::default(),
            signing_secret_set: !n.sealed_secret.is_empty(),
        }),
        access_request_ttl: Some(duration_out(limits.access_request_ttl(s))),
    }
}

/// A tenant's access request TTL as given: none (absent or zero) for the
/// server's default, else whole seconds (bounds are checked with the
/// settings).
pub fn access_request_ttl_in(d: Option<prost_types::Duration>) -> Result<Option<u32>> {
    let Some(d) = d else {
        return Ok(None);
    };
    if d.nanos != 0 || d.seconds < 0 {
        return Err(Error::invalid(
            "settings.access_request_ttl",
            "must be whole seconds",
        ));
    }
    if d.seconds == 0 {
        return Ok(None);
    }
    Ok(Some(u32::try_from(d.seconds).unwrap_or(u32::MAX)))
}

fn rate_limit_out(l: RateLimit) -> pb::RateLimit {
    pb::RateLimit {
        enabled: l.enabled,
        per_minute: l.per_minute,
        burst: l.burst,
    }
}

/// A rate limit as given.
pub fn rate_limit_in(l: pb::RateLimit) -> RateLimit {
    RateLimit {
        enabled: l.enabled,
        per_minute: l.per_minute,
        burst: l.burst,
    }
}

/// A denial alert as given (bounds are checked with the settings); an
/// absent window keeps `current`'s.
pub fn denial_alert_in(a: pb::DenialAlert, current: DenialAlert) -> Result<DenialAlert> {
    let window = match a.window {
        None => current.window_secs,
        Some(d) => {
            if d.nanos != 0 || d.seconds < 0 {
                return Err(Error::invalid(
                    "settings.denial_alert.window",
                    "must be whole seconds",
                ));
            }
            u32::try_from(d.seconds).unwrap_or(u32::MAX)
        }
    };
    Ok(DenialAlert {
        threshold: a.threshold,
        window_secs: window,
        auto_lock: a.auto_lock,
    })
}

/// An identity binding as returned.
pub fn binding_out(b: &IdentityBinding) -> pb::IdentityBinding {
    pb::IdentityBinding {
        id: b.id.to_string(),
        principal_id: b.principal.to_string(),
        identity: b.pattern.to_text(),
        pattern: matches!(b.pattern, IdentityPattern::Prefix(_)),
        created_at: Some(time_out(b.created_at)),
        created_by: String::new(),
    }
}

/// The overview's filter, each field checked and named.
pub fn overview_filter_in(
    req: &pb::RotationStatusOverviewRequest,
) -> Result<strongroom_engine::RotationOverviewFilter> {
    use strongroom_engine::OverviewStatus as S;
    let status = match pb::RotationOverviewStatus::try_from(req.status)
        .map_err(|_| Error::invalid("status", "unknown rotation overview status"))?
    {
        pb::RotationOverviewStatus::Unspecified => None,
        pb::RotationOverviewStatus::Healthy => Some(S::Healthy),
        pb::RotationOverviewStatus::DueSoon => Some(S::DueSoon),
        pb::RotationOverviewStatus::Overdue => Some(S::Overdue),
        pb::RotationOverviewStatus::Expired => Some(S::Expired),
        pb::RotationOverviewStatus::Revoked => Some(S::Revoked),
    };
    Ok(strongroom_engine::RotationOverviewFilter {
        environment: (!req.environment.is_empty())
            .then(|| strongroom_core::names::Environment::parse(&req.environment, "environment"))
            .transpose()?,
        service: (!req.service.is_empty())
            .then(|| strongroom_core::names::ServiceLabel::parse(&req.service, "service"))
            .transpose()?,
        status,
    })
}

/// The overview as returned: statuses and due dates as of `now`, against
/// the tenant's default rotation policy.
pub fn overview_out(
    o: &strongroom_engine::RotationOverview,
    tenant_rotation: &strongroom_core::credential::RotationPolicy,
    now: strongroom_core::time::Timestamp,
) -> pb::RotationStatusOverviewResponse {
    let c = &o.counts;
    pb::RotationStatusOverviewResponse {
        healthy: c.healthy,
        due_soon: c.due_soon,
        overdue: c.overdue,
        expired: c.expired,
        revoked: c.revoked,
        due_credentials: o
            .page
            .items
            .iter()
            .map(|x| crate::grpc::credential::convert::credential_out(x, tenant_rotation, now))
            .collect(),
        next_page_token: o.page.next_token(),
        groups: o
            .groups
            .iter()
            .map(|((environment, service), g)| pb::RotationStatusGroup {
                environment: environment.to_string(),
                service: service.to_string(),
                healthy: g.healthy,
                due_soon: g.due_soon,
                overdue: g.overdue,
                expired: g.expired,
                revoked: g.revoked,
            })
            .collect(),
    }
}

/// A tenant's key versions and rotation progress on the wire.
pub fn key_status_out(s: strongroom_engine::TenantKeyStatus) -> pb::GetTenantKeyStatusResponse {
    pb::GetTenantKeyStatusResponse {
        current_kek_version: s.current,
        versions: s
            .versions
            .into_iter()
            .map(|v| pb::TenantKeyVersion {
                kek_version: v.version,
                current: v.current,
                data_keys: v.data_keys,
                notifier_secret: v.notifier_secret,
                created_at: Some(time_out(v.created_at)),
            })
            .collect(),
        data_keys_pending: s.pending,
        rotation_started_at: s.rotation.map(|r| time_out(r.started_at)),
        rotation_finished_at: s.rotation.and_then(|r| r.finished_at.map(time_out)),
    }
}
