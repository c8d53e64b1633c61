//! Access requests with human approval: an agent without a grant files a
//! request; a tenant admin approves it (a time-boxed grant for the
//! requester, linked to the request, committed with the decision and its
//! event) or denies it; a request nobody answers expires (read as expired
//! at once, marked by the sweeper). The requester may wait for the
//! decision ([`Engine::await_decision`]): woken by this server's commits
//! and other servers' change notices, polling as the fallback.

use std::time::Duration;

use strongroom_core::access::{
    AccessDecision, AccessRequestFilter, AccessRequestRecord, AccessRequestStatus,
    DEFAULT_ACCESS_DURATION, MAX_ACCESS_DURATION,
};
use strongroom_core::audit::{Action, AuditDetail, AuditDraft, Outcome};
use strongroom_core::ids::{AccessRequestId, GrantId, PrincipalId};
use strongroom_core::names::Environment;
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::policy::{
    Capabilities, Capability, Destination, Grant, GrantSubject, Reason, Selector,
};
use strongroom_core::principal::{Principal, PrincipalStatus, Role};
use strongroom_core::scope::{Authenticated, SystemScope, TenantScope};
use strongroom_core::store::Change;
use strongroom_core::tenant::TenantStatus;
use strongroom_core::{Error, Result};
use tokio::sync::broadcast::error::RecvError;

use crate::{CallContext, Engine};

/// How often a waiting requester looks at the store without a wake-up.
pub const DECISION_POLL: Duration = Duration::from_millis(500);

/// Most requests the sweeper expires in one pass.
const SWEEP_BATCH: u32 = 500;

/// The shortest access a request may ask for.
const MIN_ACCESS_DURATION: Duration = Duration::from_secs(60);

/// A request for access, as filed.
#[derive(Debug, Clone)]
pub struct NewAccessRequest {
    /// Which credential names: an exact name or a prefix (`llm/*`).
    pub selector: Selector,
    /// In which environments.
    pub environments: Vec<Environment>,
    /// `inject` or `reveal`.
    pub capability: Capability,
    /// Where injection would go (required for inject).
    pub destinations: Vec<Destination>,
    /// Why.
    pub purpose: String,
    /// For whom.
    pub on_behalf_of: Option<String>,
    /// How long; the default when none.
    pub duration: Option<Duration>,
}

/// What an approval may narrow: each only within what was requested.
#[derive(Debug, Clone, Default)]
pub struct Narrowing {
    /// A shorter duration (from now).
    pub duration: Option<Duration>,
    /// Fewer or narrower destinations.
    pub destinations: Vec<Destination>,
    /// Fewer environments.
    pub environments: Vec<Environment>,
    /// Why.
    pub reason: String,
}

/// Whether `narrow` allows nothing `wide` does not: the same host, methods
/// among its methods (any when it names none), paths under its prefixes,
/// placeholder headers and query parameters among its own.
fn within(narrow: &Destination, wide: &Destination) -> bool {
    if !narrow.host.eq_ignore_ascii_case(&wide.host) {
        return false;
    }
    let methods = wide.methods.is_empty()
        || (!narrow.methods.is_empty() && narrow.methods.iter().all(|m| wide.methods.contains(m)));
    let paths = wide.path_prefixes.is_empty()
        || (!narrow.path_prefixes.is_empty()
            && narrow.path_prefixes.iter().all(|p| {
                wide.path_prefixes
                    .iter()
                    .any(|w| strongroom_core::net::path_has_prefix(p, w))
            }));
    let headers = narrow.placeholder_headers.iter().all(|h| {
        wide.placeholder_headers
            .iter()
            .any(|w| w.eq_ignore_ascii_case(h))
    });
    let query = narrow
        .placeholder_query
        .iter()
        .all(|q| wide.placeholder_query.contains(q));
    methods && paths && headers && query
}

impl Engine {
    /// Files a request for access (any principal but a viewer, only within
    /// the environments it may enter). A pending request of the caller for
    /// the same thing is returned instead of a new one; the flag says
    /// whether the request is new.
    pub async fn file_access_request(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        new: NewAccessRequest,
    ) -> Result<(AccessRequestRecord, bool)> {
        let scope = caller.tenant_scope()?;
        let principal = scope.principal();
        if principal.role == Role::Viewer {
            self.require_role(
                &scope,
                ctx,
                Action::AccessRequestFile,
                &[Role::Admin, Role::Operator, Role::Agent],
            )
            .await?;
        }
        if !matches!(new.capability, Capability::Inject | Capability::Reveal) {
            return Err(Error::invalid("capability", "must be inject or reveal"));
        }
        if new.purpose.trim().is_empty() {
            return Err(Error::invalid("purpose", "is required"));
        }
        if new.purpose.len() > 1024 {
            return Err(Error::invalid("purpose", "must be at most 1024 characters"));
        }
        if new.on_behalf_of.as_ref().is_some_and(|o| o.len() > 256) {
            return Err(Error::invalid(
                "on_behalf_of",
                "must be at most 256 characters",
            ));
        }
        let duration = new.duration.unwrap_or(DEFAULT_ACCESS_DURATION);
        if !(MIN_ACCESS_DURATION..=MAX_ACCESS_DURATION).contains(&duration) {
            return Err(Error::invalid(
                "requested_duration",
                "must be 1 minute to 30 days",
            ));
        }
        if new.environments.is_empty() {
            return Err(Error::invalid("environments", "at least one is required"));
        }
        if new.environments.len() > 32 {
            return Err(Error::invalid("environments", "at most 32"));
        }
        if let Some(e) = new.environments.iter().find(|e| !principal.may_enter(e)) {
            return Err(Error::invalid(
                "environments",
                format!("the caller is confined to other environments than '{e}'"),
            ));
        }
        match new.capability {
            Capability::Inject if new.destinations.is_empty() => {
                return Err(Error::invalid(
                    "destinations",
                    "at least one destination is required for inject",
                ));
            }
            Capability::Reveal if !new.destinations.is_empty() => {
                return Err(Error::invalid(
                    "destinations",
                    "destinations apply to inject only",
                ));
            }
            _ => {}
        }
        if new.destinations.len() > 32 {
            return Err(Error::invalid("destinations", "at most 32"));
        }
        for d in &new.destinations {
            d.validate()?;
        }
        self.ensure_environments(&scope, &new.environments, "environments")
            .await?;
        let now = self.now();
        let mut environments = new.environments;
        environments.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        environments.dedup();
        let request = AccessRequestRecord {
            id: AccessRequestId::generate(),
            tenant: scope.tenant_id(),
            requester: principal.id,
            requester_name: principal.name.to_string(),
            selector: new.selector,
            environments,
            capability: new.capability,
            destinations: new.destinations,
            purpose: new.purpose,
            on_behalf_of: new.on_behalf_of,
            duration,
            status: AccessRequestStatus::Pending,
            created_at: now,
            expires_at: now.plus(self.limits.access_request_ttl(&scope.tenant().settings)),
            decided_at: None,
            decided_by: None,
            decision_reason: String::new(),
            grant: None,
        };
        let mut draft = self.request_draft(
            &scope,
            ctx,
            Action::AccessRequestFile,
            Reason::Allowed,
            &request,
        );
        draft.detail = Some(AuditDetail::AccessRequestFiled {
            request: request.id,
            capability: request.capability,
            selector: request.selector.to_text(),
            environments: request
                .environments
                .iter()
                .map(ToString::to_string)
                .collect(),
            duration_secs: request.duration.as_secs(),
            expires_at: request.expires_at,
        });
        // The tenant's notifier (as this server last loaded the tenant)
        // is told in the same commit: the delivery row is written with the
        // request, and the sender posts it.
        let notice = scope
            .tenant()
            .settings
            .notifier
            .as_ref()
            .map(|_| crate::notify::access_request_delivery(&request, now));
        // Not `durable`, which answers every store error UNAVAILABLE: the
        // store's refusals reach the caller as they are (as for grants).
        let filed = self
            .store
            .file_access_request(&scope, &request, notice.as_ref(), now, draft)
            .await?;
        if filed.1 && notice.is_some() {
            self.wake_notifier();
        }
        Ok(filed)
    }

    /// The draft of an event about `request`.
    fn request_draft(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        action: Action,
        reason: Reason,
        request: &AccessRequestRecord,
    ) -> AuditDraft {
        let mut d = self.draft(scope, ctx, action, Outcome::Allowed, reason);
        d.credential_name = Some(request.selector.to_text());
        d.environment = request.environments.first().map(ToString::to_string);
        d.on_behalf_of.clone_from(&request.on_behalf_of);
        d.purpose = Some(request.purpose.clone());
        d
    }

    /// The request `id` as the caller may see it (admins: any; others:
    /// their own, anyone else's is NOT_FOUND), its status as it is now.
    pub async fn get_access_request(
        &self,
        caller: &Authenticated,
        id: AccessRequestId,
    ) -> Result<AccessRequestRecord> {
        let scope = caller.tenant_scope()?;
        let request = self.store.get_access_request(&scope, id).await?;
        if !is_tenant_admin(scope.principal()) && request.requester != scope.principal().id {
            return Err(Error::not_found("access request"));
        }
        Ok(self.as_now(request))
    }

    /// `request` with the status it has now.
    fn as_now(&self, mut request: AccessRequestRecord) -> AccessRequestRecord {
        request.status = request.effective_status(self.now());
        request
    }

    /// Lists requests, newest first: admins any requester's (or one's),
    /// others only their own (asking for another's is PERMISSION_DENIED).
    pub async fn list_access_requests(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        requester: Option<PrincipalId>,
        status: Option<AccessRequestStatus>,
        page: &PageRequest,
    ) -> Result<Page<AccessRequestRecord>> {
        let scope = caller.tenant_scope()?;
        let me = scope.principal().id;
        let requester = if is_tenant_admin(scope.principal()) {
            requester
        } else {
            match requester {
                Some(p) if p != me => {
                    self.require_admin(&scope, ctx, Action::AccessRequestList)
                        .await?;
                    Some(p)
                }
                _ => Some(me),
            }
        };
        let now = self.now();
        let filter = AccessRequestFilter { requester, status };
        let mut page = self
            .store
            .list_access_requests(&scope, &filter, now, page)
            .await?;
        for r in &mut page.items {
            r.status = r.effective_status(now);
        }
        Ok(page)
    }

    /// The tenant's notifier deliveries, newest first (tenant admins).
    pub async fn list_notification_deliveries(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        page: &PageRequest,
    ) -> Result<Page<strongroom_core::notify::Delivery>> {
        let scope = caller.tenant_scope()?;
        if !is_tenant_admin(scope.principal()) {
            // Refused like listing another's requests (and audited so).
            self.require_admin(&scope, ctx, Action::AccessRequestList)
                .await?;
        }
        self.store.list_notification_deliveries(&scope, page).await
    }

    /// The pending request `id` an admin decides: not the admin's own.
    async fn decidable(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        action: Action,
        id: AccessRequestId,
    ) -> Result<AccessRequestRecord> {
        self.require_admin(scope, ctx, action).await?;
        let request = self.store.get_access_request(scope, id).await?;
        if request.requester == scope.principal().id {
            return Err(Error::denied(
                "an access request cannot be decided by its own requester",
            ));
        }
        match request.effective_status(self.now()) {
            AccessRequestStatus::Pending => Ok(request),
            AccessRequestStatus::Expired => Err(Error::precondition(
                "the access request has expired: nobody answered it in time",
            )),
            s => Err(Error::precondition(format!(
                "the access request is not pending (it is {})",
                s.as_str()
            ))),
        }
    }

    /// Approves a pending request (tenant admin, not its requester): a
    /// grant for the requester, of the requested capability on the
    /// requested credentials, until now plus the duration, committed with
    /// the decision. The approval may narrow the duration, destinations and
    /// environments, never widen them (INVALID_ARGUMENT naming the field).
    pub async fn approve_access_request(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        id: AccessRequestId,
        narrowing: Narrowing,
    ) -> Result<(AccessRequestRecord, Grant)> {
        let scope = caller.tenant_scope()?;
        let request = self
            .decidable(&scope, ctx, Action::AccessRequestApprove, id)
            .await?;
        let duration = match narrowing.duration {
            None => request.duration,
            Some(d) if d.is_zero() => {
                return Err(Error::invalid("duration", "must be positive"));
            }
            Some(d) if d > request.duration => {
                return Err(Error::invalid(
                    "duration",
                    "may only shorten the requested duration",
                ));
            }
            Some(d) => d,
        };
        let environments = if narrowing.environments.is_empty() {
            request.environments.clone()
        } else {
            if let Some(e) = narrowing
                .environments
                .iter()
                .find(|e| !request.environments.contains(e))
            {
                return Err(Error::invalid(
                    "environments",
                    format!("'{e}' was not requested: an approval only narrows"),
                ));
            }
            let mut e = narrowing.environments;
            e.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            e.dedup();
            e
        };
        let destinations = if narrowing.destinations.is_empty() {
            request.destinations.clone()
        } else {
            if request.capability != Capability::Inject {
                return Err(Error::invalid(
                    "destinations",
                    "destinations apply to inject only",
                ));
            }
            for d in &narrowing.destinations {
                d.validate()?;
                if !request.destinations.iter().any(|w| within(d, w)) {
                    return Err(Error::invalid(
                        "destinations",
                        format!(
                            "'{}' is not within the requested destinations: an approval only narrows",
                            d.host
                        ),
                    ));
                }
            }
            narrowing.destinations
        };
        if narrowing.reason.len() > 1024 {
            return Err(Error::invalid("reason", "must be at most 1024 characters"));
        }
        // The requester as it is now: a viewer never receives values.
        let requester = match self.store.get_principal(&scope, request.requester).await {
            Err(Error::NotFound(_)) => {
                return Err(Error::precondition("the requester no longer exists"));
            }
            other => other?,
        };
        if requester.role == Role::Viewer {
            return Err(Error::precondition(
                "the requester is a viewer now: viewers never receive values",
            ));
        }
        let now = self.now();
        let grant = Grant {
            id: GrantId::generate(),
            tenant: scope.tenant_id(),
            subject: GrantSubject::Principal(request.requester),
            selector: request.selector.clone(),
            environments,
            capabilities: Capabilities::of(&[request.capability]),
            destinations,
            expires_at: Some(now.plus(duration)),
            reason: if narrowing.reason.is_empty() {
                format!("access request {id} approved")
            } else {
                narrowing.reason
            },
            granted_by: scope.principal().id,
            created_at: now,
            access_request: Some(id),
        };
        let mut draft = self.request_draft(
            &scope,
            ctx,
            Action::AccessRequestApprove,
            Reason::AllowedByRole,
            &request,
        );
        draft.detail = Some(AuditDetail::AccessRequestDecided {
            request: id,
            requester: request.requester,
            grant: Some(grant.id),
            grant_expires_at: grant.expires_at,
            reason: grant.reason.clone(),
        });
        let decision = AccessDecision::Approve(Box::new(grant.clone()));
        let by = scope.principal().id;
        let decided = self
            .commit(scope.tenant_id(), draft, |draft| {
                // A request decided meanwhile is FAILED_PRECONDITION.
                self.store
                    .decide_access_request(&scope, id, &decision, by, now, draft)
            })
            .await?;
        Ok((decided, grant))
    }

    /// Denies a pending request (tenant admin, not its requester), with a
    /// reason the requester sees; no grant is created.
    pub async fn deny_access_request(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        id: AccessRequestId,
        reason: String,
    ) -> Result<AccessRequestRecord> {
        let scope = caller.tenant_scope()?;
        if reason.len() > 1024 {
            return Err(Error::invalid("reason", "must be at most 1024 characters"));
        }
        let request = self
            .decidable(&scope, ctx, Action::AccessRequestDeny, id)
            .await?;
        let mut draft = self.request_draft(
            &scope,
            ctx,
            Action::AccessRequestDeny,
            Reason::AllowedByRole,
            &request,
        );
        draft.detail = Some(AuditDetail::AccessRequestDecided {
            request: id,
            requester: request.requester,
            grant: None,
            grant_expires_at: None,
            reason: reason.clone(),
        });
        let now = self.now();
        let by = scope.principal().id;
        let decision = AccessDecision::Deny(reason);
        self.commit(scope.tenant_id(), draft, |draft| {
            self.store
                .decide_access_request(&scope, id, &decision, by, now, draft)
        })
        .await
    }

    /// Waits until the request `id` (the caller's own, or any for an
    /// admin) is no longer pending, and returns it: woken by this server's
    /// commits and other servers' change notices, looking every
    /// [`DECISION_POLL`] as well, so a lost wake-up (or a clock moved past
    /// its expiry) only delays it. PERMISSION_DENIED once the caller is
    /// disabled or deleted, or its tenant suspended (checked on a change
    /// of the tenant's callers, and every cache time to live).
    pub async fn await_decision(
        &self,
        caller: &Authenticated,
        id: AccessRequestId,
    ) -> Result<AccessRequestRecord> {
        let scope = caller.tenant_scope()?;
        let tenant = scope.tenant_id();
        let mut appended = self.store.appended();
        let mut changes = self.caches.subscribe();
        // A watcher disabled while it waits stops: checked again on a
        // change of who the tenant's callers are, and every cache time to
        // live (the bound on a lost notice) whatever the notices.
        let bound = self.limits().cache_ttl.max(DECISION_POLL);
        let mut checked = tokio::time::Instant::now();
        let mut recheck = false;
        loop {
            if recheck || checked.elapsed() >= bound {
                if self.store.tenant(&scope).await?.status != TenantStatus::Active {
                    return Err(Error::denied("the tenant is suspended"));
                }
                let now = self.store.get_principal(&scope, scope.principal().id).await;
                match now {
                    Ok(p) if p.status == PrincipalStatus::Active => {}
                    Ok(_) | Err(Error::NotFound(_)) => {
                        return Err(Error::denied("the principal was disabled"));
                    }
                    Err(e) => return Err(e),
                }
                checked = tokio::time::Instant::now();
            }
            let request = self.get_access_request(caller, id).await?;
            if request.status != AccessRequestStatus::Pending {
                return Ok(request);
            }
            let woken = async {
                loop {
                    match appended.recv().await {
                        Ok(t) if t == tenant => return,
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => return,
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            let changed = async {
                loop {
                    match changes.recv().await {
                        Ok(Change::Requests(t) | Change::Data(t)) if t == tenant => return false,
                        Ok(Change::Access(t) | Change::Keys(t) | Change::KeyRetired(t, _))
                            if t == tenant =>
                        {
                            return true;
                        }
                        Ok(Change::Everything) | Err(RecvError::Lagged(_)) => return true,
                        Ok(_) => {}
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            recheck = tokio::select! {
                () = woken => false,
                who = changed => who,
                () = tokio::time::sleep(DECISION_POLL) => false,
            };
        }
    }

    /// Expires the pending requests nobody answered in time, each with an
    /// `access_request.expire` event: the sweeper's pass (one server works
    /// at a time). Returns how many it expired.
    pub async fn expire_access_requests(&self, system: &SystemScope) -> Result<u32> {
        let now = self.now();
        let by = system.audit_at(
            Action::AccessRequestExpire,
            Outcome::Allowed,
            Reason::Allowed.as_str(),
            now,
        );
        let mut total = 0;
        loop {
            let n = self
                .durable(self.store.expire_access_requests(now, &by, SWEEP_BATCH))
                .await?;
            total += n;
            if n < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }
}

/// Whether `p` administers its whole tenant.
fn is_tenant_admin(p: &Principal) -> bool {
    p.role == Role::Admin && p.environments.is_empty()
}
