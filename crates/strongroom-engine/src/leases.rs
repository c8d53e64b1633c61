//! Leases after the reveal that opened them (see `credentials/reveal.rs`):
//! renewal and release by their holder, the listing for tenant admins and
//! operators, and the sweeper that expires them when they run out.

use std::time::Duration;

use strongroom_core::audit::{Action, AuditDetail, Outcome};
use strongroom_core::credential::CredentialStatus;
use strongroom_core::ids::LeaseId;
use strongroom_core::lease::{Lease, LeaseFilter, LeaseState};
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::policy::{AccessRequest, Capability, Reason, evaluate};
use strongroom_core::principal::Role;
use strongroom_core::scope::{Authenticated, SystemScope, TenantScope};
use strongroom_core::{Error, Result};

use crate::authorization::hide_missing;
use crate::{CallContext, CredentialRef, Engine};

/// Most leases the sweeper expires in one pass.
const SWEEP_BATCH: u32 = 500;

impl Engine {
    /// The caller's lease `id`: NOT_FOUND if the tenant has none such;
    /// another principal's lease is refused (PERMISSION_DENIED, audited).
    async fn held_lease(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        action: Action,
        id: LeaseId,
    ) -> Result<Lease> {
        let lease = self.store.get_lease(scope, id).await?;
        if lease.principal != scope.principal().id {
            let mut d = self.draft(scope, ctx, action, Outcome::Denied, Reason::NotLeaseHolder);
            d.credential = Some(lease.credential);
            d.credential_name = Some(lease.credential_name.to_string());
            d.environment = Some(lease.environment.to_string());
            self.audit_denial(scope, d).await;
            return Err(Error::denied(Reason::NotLeaseHolder.explain()));
        }
        Ok(lease)
    }

    /// Extends the caller's lease by `ttl` from now (its own TTL when
    /// none; at most the longest lease time), up to its maximum lifetime,
    /// while its credential, its grant and the caller's role and
    /// environments still allow the use. FAILED_PRECONDITION naming why
    /// otherwise, and for a lease that ended or reached its maximum.
    pub async fn renew_lease(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        id: LeaseId,
        ttl: Option<Duration>,
    ) -> Result<Lease> {
        let scope = caller.tenant_scope()?;
        let lease = self.held_lease(&scope, ctx, Action::LeaseRenew, id).await?;
        let now = self.now();
        if lease.state != LeaseState::Active {
            return Err(Error::precondition(format!(
                "the lease has ended ({})",
                lease.state.as_str()
            )));
        }
        if lease.expires_at <= now {
            return Err(Error::precondition("the lease has expired"));
        }
        if lease.expires_at >= lease.max_expires_at {
            return Err(Error::precondition(
                "the lease has reached its maximum lifetime; reveal the credential again",
            ));
        }
        // Read fresh, not from the caches: a renewal is rare, and must see
        // a revocation made through another server at once.
        let credential = self.store.get_credential(&scope, lease.credential).await?;
        if credential.ensure_usable(now).is_err() {
            let why = match credential.effective_status(now) {
                CredentialStatus::Revoked => "revoked",
                CredentialStatus::Expired => "expired",
                CredentialStatus::Active => "destroyed",
            };
            return Err(Error::precondition(format!(
                "the lease's credential is {why}"
            )));
        }
        let principal = scope.principal();
        let grants = self.store.grants_for(&scope, principal).await?;
        if let Some(grant) = lease.grant {
            match grants.iter().find(|g| g.id == grant) {
                None => {
                    return Err(Error::precondition(
                        "the grant that allowed the lease was revoked",
                    ));
                }
                Some(g) if g.is_expired(now) => {
                    return Err(Error::precondition(
                        "the grant that allowed the lease has expired",
                    ));
                }
                Some(_) => {}
            }
        }
        let decision = evaluate(
            principal,
            &grants,
            &AccessRequest {
                capability: Capability::Reveal,
                environment: &credential.environment,
                name: &credential.name,
                owner: credential.owner.as_deref(),
                on_behalf_of: lease.on_behalf_of.as_deref(),
            },
            now,
        );
        if !decision.allowed {
            return Err(Error::precondition(format!(
                "the principal may no longer use the credential: {}",
                decision.reason.explain()
            )));
        }
        let ttl = ttl
            .unwrap_or(lease.ttl)
            .min(self.limits.max_lease_ttl)
            .max(Duration::from_secs(1));
        let expires_at = now.plus(ttl).min(lease.max_expires_at);
        let mut draft = self.credential_draft(
            &scope,
            ctx,
            Action::LeaseRenew,
            Outcome::Allowed,
            decision.reason,
            &credential,
        );
        draft.version = Some(lease.version);
        draft.on_behalf_of.clone_from(&lease.on_behalf_of);
        draft.detail = Some(AuditDetail::LeaseRenewed {
            lease_id: lease.id,
            ttl_secs: ttl.as_secs(),
            expires_at,
        });
        self.durable(
            self.store
                .renew_lease(&scope, lease.id, principal.id, expires_at, draft),
        )
        .await
    }

    /// Ends the caller's lease: it no longer uses the value. Releasing a
    /// lease already released answers with it unchanged (a retried release
    /// succeeds); a lease that expired or was revoked is FAILED_PRECONDITION.
    pub async fn release_lease(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        id: LeaseId,
    ) -> Result<Lease> {
        let scope = caller.tenant_scope()?;
        let lease = self
            .held_lease(&scope, ctx, Action::LeaseRelease, id)
            .await?;
        match lease.state {
            LeaseState::Active => {}
            LeaseState::Released => return Ok(lease),
            ended => {
                return Err(Error::precondition(format!(
                    "the lease has ended ({})",
                    ended.as_str()
                )));
            }
        }
        let now = self.now();
        let mut draft = self.draft(
            &scope,
            ctx,
            Action::LeaseRelease,
            Outcome::Allowed,
            Reason::Allowed,
        );
        draft = lease.end_draft(&draft, strongroom_core::lease::LeaseEnd::Released, now);
        self.durable(
            self.store
                .release_lease(&scope, lease.id, scope.principal().id, draft),
        )
        .await
    }

    /// Lists leases (tenant admins and operators), oldest first, of the
    /// credential `credential` names if any; a caller confined to
    /// environments sees the leases on credentials of those only.
    pub async fn list_leases(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        credential: Option<&CredentialRef>,
        filter: LeaseFilter,
        page: &PageRequest,
    ) -> Result<Page<Lease>> {
        let scope = caller.tenant_scope()?;
        self.require_role(
            &scope,
            ctx,
            Action::LeaseList,
            &[Role::Admin, Role::Operator],
        )
        .await?;
        let credential = match credential {
            Some(r) => Some(self.lookup(&scope, r).await.map_err(hide_missing)?.id),
            None => filter.credential,
        };
        let confined = &scope.principal().environments;
        let filter = LeaseFilter {
            credential,
            environments: (!confined.is_empty()).then(|| confined.clone()),
            ..filter
        };
        self.store.list_leases(&scope, &filter, page).await
    }

    /// Expires the leases that ran out by the engine's clock, each with a
    /// `lease.expire` event in its tenant's chain: the lease sweeper's one
    /// pass (it runs while other servers may run theirs; one works at a
    /// time). Returns how many it expired.
    pub async fn expire_leases(&self, system: &SystemScope) -> Result<u32> {
        let now = self.now();
        let by = system.audit_at(Action::LeaseExpire, Outcome::Allowed, "", now);
        let mut total = 0;
        loop {
            let n = self
                .durable(self.store.expire_leases(now, &by, SWEEP_BATCH))
                .await?;
            total += n;
            if n < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }
}
