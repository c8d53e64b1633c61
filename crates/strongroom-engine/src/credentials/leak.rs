//! What a refused or leaked use sets off: the denial and its alert, the
//! placeholder canary (`alert.placeholder_misuse`), and, with the tenant's
//! `revoke_grant_on_leak`, the caller's own grants naming the credential
//! revoked (a shared grant never; the principal locked instead when
//! `denial_alert.auto_lock` is on); leaks reported by local tools
//! (`report_leak`). The rules are in `inject.rs`'s opening comment.

use strongroom_core::audit::{Action, AuditDetail, Outcome};
use strongroom_core::ids::GrantId;
use strongroom_core::net::RequestTarget;
use strongroom_core::policy::{Capability, Grant, GrantSubject, Reason, Selector};
use strongroom_core::principal::Role;
use strongroom_core::scope::{Authenticated, TenantScope};
use strongroom_core::{Error, Result};

use super::CredentialRef;
use super::inject::*;
use crate::{CallContext, Engine};

impl Engine {
    /// Audits each refused use; raises the alert for refused placeholders
    /// and, with the tenant setting, revokes their grants.
    pub(super) async fn refuse_injection(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        request: &InjectionRequest,
        refusals: Vec<RefusedUse<'_>>,
    ) -> Refused {
        let target = &request.target;
        let (host, path) = (target.authority(), target.path.clone());
        let revoke = scope.tenant().settings.revoke_grant_on_leak;
        let mut answer = Refused {
            reason: refusals[0].1,
            alerted: false,
            revoked: Vec::new(),
        };
        for (u, reason, credential, grants) in refusals {
            let mut d = self.draft(
                scope,
                ctx,
                Action::CredentialInject,
                Outcome::Denied,
                reason,
            );
            d.credential = credential.as_ref().map(|c| c.id);
            d.credential_name = Some(u.credential.name.to_string());
            d.environment = Some(u.credential.environment.to_string());
            d.purpose = Some(request.purpose.clone()).filter(|p| !p.is_empty());
            d.on_behalf_of.clone_from(&request.on_behalf_of);
            d.detail = Some(AuditDetail::Inject {
                grant: None,
                host: host.clone(),
                method: request.method.clone(),
                path: path.clone(),
            });
            self.audit_denial(scope, d.clone()).await;
            if !matches!(u.kind, UseKind::Placeholder(_)) {
                continue;
            }
            answer.alerted = true;
            // Misuse: a destination or slot not allowed for an existing
            // credential the caller holds inject on.
            let misuse = credential.is_some()
                && matches!(
                    reason,
                    Reason::DestinationNotAllowed | Reason::PlaceholderMisuse
                );
            let principal = scope.principal();
            let (own, shared): (Vec<&Grant>, Vec<&Grant>) = grants
                .iter()
                .partition(|g| own_exact_grant(g, principal.id));
            let revoked = revoke && misuse && !own.is_empty();
            let lock = revoke
                && misuse
                && !shared.is_empty()
                && scope.tenant().settings.denial_alert.auto_lock
                && principal.role != Role::Admin;
            let grants: Vec<GrantId> = grants.iter().map(|g| g.id).collect();
            let own: Vec<GrantId> = own.iter().map(|g| g.id).collect();
            let mut alert = d;
            alert.id = strongroom_core::ids::EventId::generate();
            alert.action = Action::AlertPlaceholderMisuse;
            alert.outcome = Outcome::Denied;
            alert.reason_code = Reason::PlaceholderMisuse.as_str().to_owned();
            alert.detail = Some(AuditDetail::PlaceholderMisuse {
                grants: grants.clone(),
                host: host.clone(),
                method: request.method.clone(),
                path: path.clone(),
                revoked,
            });
            if let Err(e) = self.audit(scope, alert.clone()).await {
                tracing::error!(error = %e, "could not record a placeholder misuse alert");
            }
            if lock {
                self.lock_principal(scope, &alert, Reason::PlaceholderMisuse, 0)
                    .await;
            }
            if revoked {
                for id in own {
                    if answer.revoked.contains(&id) {
                        continue;
                    }
                    match self
                        .revoke_for_leak(
                            scope,
                            ctx,
                            id,
                            Reason::PlaceholderMisuse,
                            "a placeholder was sent to a destination its grants do not allow",
                        )
                        .await
                    {
                        Ok(()) => answer.revoked.push(id),
                        Err(e) => {
                            tracing::error!(error = %e, grant = %id, "could not revoke a grant after a leak")
                        }
                    }
                }
            }
        }
        answer
    }

    /// Raises `alert.placeholder_misuse` for each credential whose
    /// placeholder a request carried that the relay refused before its
    /// uses were decided (a malformed head, too many in flight, a body
    /// over the limit): a placeholder is a canary whatever refuses it.
    /// `target` is the parsed target and method when the head parsed.
    /// Nothing is revoked; a failure to record is logged.
    pub async fn alert_refused_placeholders(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        credentials: &[InjectionRef],
        target: Option<(&RequestTarget, &str)>,
        why: &str,
    ) {
        let Ok(scope) = caller.tenant_scope() else {
            return;
        };
        let (host, method, path) = match target {
            Some((t, m)) => (t.authority(), m.to_owned(), t.path.clone()),
            None => (String::new(), String::new(), String::new()),
        };
        for r in credentials {
            let mut alert = self.draft(
                &scope,
                ctx,
                Action::AlertPlaceholderMisuse,
                Outcome::Denied,
                Reason::PlaceholderMisuse,
            );
            alert.credential_name = Some(r.name.to_string());
            alert.environment = Some(r.environment.to_string());
            alert.detail = Some(AuditDetail::PlaceholderMisuse {
                grants: vec![],
                host: host.clone(),
                method: method.clone(),
                path: path.clone(),
                revoked: false,
            });
            tracing::warn!(
                refused = why,
                "a request carrying a placeholder was refused early"
            );
            if let Err(e) = self.audit(&scope, alert).await {
                tracing::error!(error = %e, "could not record a placeholder misuse alert");
            }
        }
    }

    /// Revokes a grant because of a leak, through the normal revoke path:
    /// recorded as `grant.revoke` and dropped from every server's caches.
    async fn revoke_for_leak(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        id: GrantId,
        reason: Reason,
        why: &str,
    ) -> Result<()> {
        let grant = self.store.get_grant(scope, id).await?;
        let mut draft = self.draft(scope, ctx, Action::GrantRevoke, Outcome::Allowed, reason);
        draft.credential_name = Some(grant.selector.to_text());
        draft.detail = Some(AuditDetail::GrantRevoked {
            grant: id,
            reason: why.to_owned(),
        });
        self.commit(scope.tenant_id(), draft, |draft| {
            self.store.delete_grant(scope, id, draft)
        })
        .await
        .map(|_leases_ended| ())
    }

    /// Records a leak a local tool saw (`alert.leak`), for a credential the
    /// caller holds inject or reveal on (others answer NOT_FOUND); with the
    /// tenant setting `revoke_grant_on_leak`, revokes the caller's grants
    /// on it. Returns whether grants were revoked.
    pub async fn report_leak(
        &self,
        caller: &std::sync::Arc<Authenticated>,
        ctx: &CallContext,
        reference: &InjectionRef,
        channel: &str,
        form: &str,
        purpose: &str,
    ) -> Result<bool> {
        let scope = caller.tenant_scope()?;
        let principal = scope.principal();
        if !strongroom_scan::Form::ALL
            .iter()
            .any(|f| f.as_str() == form)
        {
            return Err(Error::invalid(
                "form",
                "must be one of plain, base64, base64url, url, hex, json",
            ));
        }
        if let Err(refusal) = self
            .abuse()
            .admit_leak_report(&scope, crate::settings::LEAK_REPORT_LIMIT)
        {
            self.record_rate_limited(caller, ctx, "ReportLeak", &refusal)
                .await;
            return Err(Error::ResourceExhausted(
                format!(
                    "too many leak reports; retry in {} s",
                    refusal.retry_after.as_secs().max(1)
                )
                .into(),
            ));
        }
        let path = CredentialRef::Path(reference.environment.clone(), reference.name.clone());
        self.refuse_unseen(&scope, ctx, Action::AlertLeak, Capability::Inject, &path)
            .await?;
        let found = self.cached_credential(&scope, &path).await;
        let cached = self
            .find_named(&scope, ctx, Action::AlertLeak, &path, found)
            .await?;
        let credential = &cached.credential;
        if let Err(e) = self
            .authorize(
                &scope,
                ctx,
                Action::AlertLeak,
                Capability::Inject,
                &credential.environment,
                &credential.name,
                None,
                None,
            )
            .await
        {
            return Err(self.hide_refusal(&scope, credential, e).await);
        }
        let now = self.now();
        let covering: Vec<Grant> = self
            .grants_for(&scope, principal)
            .await?
            .iter()
            .filter(|g| {
                g.applies_to(principal)
                    && g.capabilities.allows(Capability::Inject)
                    && g.covers(&credential.environment, &credential.name)
                    && !g.is_expired(now)
            })
            .cloned()
            .collect();
        let grants: Vec<GrantId> = covering.iter().map(|g| g.id).collect();
        let own: Vec<GrantId> = covering
            .iter()
            .filter(|g| own_exact_grant(g, principal.id))
            .map(|g| g.id)
            .collect();
        let setting = scope.tenant().settings.revoke_grant_on_leak;
        let revoke = setting && !own.is_empty();
        let lock = setting
            && own.len() < covering.len()
            && scope.tenant().settings.denial_alert.auto_lock
            && principal.role != Role::Admin;
        let mut d = self.credential_draft(
            &scope,
            ctx,
            Action::AlertLeak,
            Outcome::Allowed,
            Reason::LeakReported,
            credential,
        );
        d.purpose = Some(purpose.to_owned()).filter(|p| !p.is_empty());
        d.detail = Some(AuditDetail::Leak {
            grants: grants.clone(),
            channel: channel.to_owned(),
            form: form.to_owned(),
            revoked: revoke,
        });
        self.audit(&scope, d.clone()).await?;
        if lock {
            self.lock_principal(&scope, &d, Reason::LeakReported, 0)
                .await;
        }
        if revoke {
            for id in own {
                self.revoke_for_leak(
                    &scope,
                    ctx,
                    id,
                    Reason::LeakReported,
                    "a local tool reported the value leaked",
                )
                .await?;
            }
        }
        Ok(revoke)
    }
}

/// Whether a leak or misuse may revoke `grant` by itself: only a grant of
/// the principal alone (not its role's) naming one credential exactly. A
/// shared grant is never deleted for one principal's misuse.
fn own_exact_grant(grant: &Grant, principal: strongroom_core::ids::PrincipalId) -> bool {
    grant.subject == GrantSubject::Principal(principal)
        && matches!(grant.selector, Selector::Exact(_))
}
