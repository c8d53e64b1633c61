//! Injection: what the relay may add to an agent's outbound request, and
//! the audit of every use. The engine decides and opens values; the server
//! (`strongroomd`'s relay) speaks HTTP.
//!
//! Rules kept here:
//! - a credential is injected only through a grant that gives the caller
//!   `inject` on it (reveal implies inject) and names a destination that
//!   allows the request (host or `*.domain`, port, method, normalised path
//!   prefix); a grant without destinations never injects, and no role
//!   default makes a destination allowed;
//! - agents must state a purpose; owner-scoped credentials are used only on
//!   behalf of their owner;
//! - the use is recorded durably (`credential.inject`, through the same
//!   checked path as a reveal) before anything is sent upstream: if that
//!   record cannot be written, nothing is sent (fail-closed); its outcome
//!   is recorded after (`credential.inject_result`);
//! - a placeholder is replaced only in the slot the credential's injection
//!   template names (`authorization` for bearer and basic, the template's
//!   header or query parameter) or in the header and query parameter names
//!   the allowing destination lists (`placeholder_headers`,
//!   `placeholder_query`); a placeholder anywhere else (another header or
//!   parameter, the path, a name) is refused as `PLACEHOLDER_MISUSE`: the
//!   agent does not choose where a value goes;
//! - a refusal is audited as denied with its reason code; a refused
//!   placeholder raises `alert.placeholder_misuse`. Only misuse (a
//!   destination or slot not allowed, for an existing credential the caller
//!   holds inject on) has consequences, and only with the tenant setting
//!   `revoke_grant_on_leak`: the caller's own grants naming the credential
//!   exactly are revoked (through the normal revoke path, so every server's
//!   caches drop them); a grant it shares (a role grant, or a selector
//!   pattern such as `llm/*` or `*`) is never deleted for one principal's
//!   misuse; instead, if the tenant's `denial_alert.auto_lock` is on, the
//!   principal is locked (admins excepted).

use std::sync::Arc;
use std::time::Duration;

use strongroom_core::audit::{Action, AuditDetail, Outcome};
use strongroom_core::credential::{Credential, Injected, InjectionTemplate};
use strongroom_core::ids::GrantId;
use strongroom_core::names::{CredentialName, Environment};
use strongroom_core::net::RequestTarget;
use strongroom_core::placeholder::{Slot, slots_allowed};
use strongroom_core::policy::{Capability, Destination, Grant, Reason};
use strongroom_core::principal::Role;
use strongroom_core::scope::{Authenticated, TenantScope};
use strongroom_core::store::{Change, RevealCheck};
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Precondition, Result};
use zeroize::Zeroizing;

use super::CredentialRef;
use crate::cache::CachedCredential;
use crate::{CallContext, Engine};

/// A credential named for injection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectionRef {
    /// Its environment.
    pub environment: Environment,
    /// Its name.
    pub name: CredentialName,
    /// The field put in place of a placeholder; `None` for the template's
    /// or the type's default.
    pub field: Option<String>,
}

/// How a credential is used in one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UseKind {
    /// Added as its injection template (or its type's default) says.
    Template,
    /// Put in place of this placeholder, which the request carries.
    Placeholder(String),
}

/// One credential used by a request.
#[derive(Debug, Clone)]
pub struct InjectionUse {
    /// Which credential.
    pub credential: InjectionRef,
    /// How.
    pub kind: UseKind,
    /// Where the request carries the placeholder (empty for a template
    /// use); see [`strongroom_core::placeholder::find`].
    pub slots: Vec<Slot>,
}

/// A request the relay is asked to forward, as far as the engine needs it:
/// never its headers, query values or body.
#[derive(Debug, Clone)]
pub struct InjectionRequest {
    /// The parsed, normalised target.
    pub target: RequestTarget,
    /// HTTP method, upper case.
    pub method: String,
    /// Why (required for agents).
    pub purpose: String,
    /// End user the caller acts for.
    pub on_behalf_of: Option<String>,
    /// The credentials used.
    pub uses: Vec<InjectionUse>,
}

/// What to put in the request for one use. Secret: `Debug` redacts.
pub enum Material {
    /// The rendered template.
    Template(Injected),
    /// Replace `placeholder` with `value` in headers and query.
    Replace {
        /// The placeholder text.
        placeholder: String,
        /// The value (secret).
        value: Zeroizing<String>,
    },
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Template(i) => f.debug_tuple("Template").field(i).finish(),
            Self::Replace { placeholder, .. } => {
                write!(f, "Replace({placeholder:?}, [REDACTED])")
            }
        }
    }
}

/// One authorized use: the credential, the grant that allows it, and what
/// to add. `Debug` never shows a value.
pub struct Injection {
    /// The credential's metadata (shared with the engine's cache: the
    /// allowed path copies none of it).
    cached: Arc<CachedCredential>,
    /// The version used.
    pub version: u32,
    /// The grant whose destination allows the request.
    pub grant: GrantId,
    /// When that grant expires, if it does: an open use ends then.
    pub grant_expires_at: Option<Timestamp>,
    /// What to add.
    pub material: Material,
    /// Secret texts this use sends (each field value, and a composed form
    /// such as basic authentication's base64), to scrub from the response.
    pub secrets: Vec<Zeroizing<String>>,
}

impl Injection {
    /// The credential's metadata.
    pub fn credential(&self) -> &Credential {
        &self.cached.credential
    }
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injection")
            .field("credential", &self.credential().id)
            .field("version", &self.version)
            .field("grant", &self.grant)
            .field("material", &self.material)
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .finish()
    }
}

/// Every use of a request, authorized and recorded.
#[derive(Debug)]
pub struct Authorized {
    /// The uses, in request order.
    pub injections: Vec<Injection>,
    /// Where it goes (for the result event).
    host: String,
    method: String,
    path: String,
    purpose: String,
    on_behalf_of: Option<String>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The first refused use's reason.
    pub reason: Reason,
    /// Whether a placeholder was refused (an alert was raised).
    pub alerted: bool,
    /// Grants revoked for it (with `revoke_grant_on_leak`).
    pub revoked: Vec<GrantId>,
}

/// The engine's answer to an injection request.
#[derive(Debug)]
pub enum InjectionDecision {
    /// Allowed and recorded: send it.
    Allowed(Authorized),
    /// Refused (and audited): answer 403.
    Refused(Refused),
}

impl Authorized {
    /// Whom the uses are on behalf of, as the request said.
    pub fn on_behalf_of(&self) -> Option<&str> {
        self.on_behalf_of.as_deref()
    }
}

/// The outcome of a forwarded request, for its result event.
#[derive(Debug, Clone, Default)]
pub struct InjectionOutcome {
    /// The destination's status, if it answered.
    pub status: Option<u16>,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Response body bytes received.
    pub bytes_received: u64,
    /// From authorization to the end of the response.
    pub duration: Duration,
    /// The relay's reason code if it answered itself.
    pub relay_error: Option<String>,
    /// Why the use was ended before its response did, if it was (the
    /// relay error is then `cut_short`).
    pub cut_short: Option<Reason>,
}

/// What the caller may do with one credential through the relay.
#[derive(Debug, Clone)]
pub struct InjectionInfo {
    /// Whether a grant with destinations gives the caller inject on it.
    pub allowed: bool,
    /// The destinations of those grants.
    pub destinations: Vec<Destination>,
    /// Whether it has an injection template (or its type a default).
    pub has_template: bool,
    /// Why not allowed: `not_found`, `no_grant`, `no_destinations`,
    /// `not_usable`; empty when allowed.
    pub reason: &'static str,
}

/// A refused use: the use, why, the credential (if found) and the grants
/// giving inject on it.
pub(super) type RefusedUse<'a> = (
    &'a InjectionUse,
    Reason,
    Option<Box<Credential>>,
    Vec<Grant>,
);

/// How one use was decided.
enum Decided {
    Allowed(Injection),
    Refused {
        reason: Reason,
        /// (Boxed: the allowed variant is small.)
        credential: Option<Box<Credential>>,
        /// The grants giving inject on it (for a placeholder's alert).
        grants: Vec<Grant>,
    },
}

impl Engine {
    /// Decides a relay request: every use must be allowed at the target;
    /// values are opened and each use is recorded durably before this
    /// returns `Allowed`. A refusal is audited (and alerted for a
    /// placeholder). A decision whose state changed before its record
    /// committed is taken once more on fresh state.
    pub async fn authorize_injection(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        request: &InjectionRequest,
    ) -> Result<InjectionDecision> {
        let scope = caller.tenant_scope()?;
        if scope.principal().role == Role::Agent && request.purpose.trim().is_empty() {
            return Err(Error::invalid("head.purpose", "is required for agents"));
        }
        match self.decide_injection(&scope, ctx, request).await {
            Err(Error::FailedPrecondition(Precondition::RevealStateChanged(_))) => {
                self.changed(Change::Access(scope.tenant_id()));
                self.refuse_shredded(&scope).await?;
            }
            other => return other,
        }
        match self.decide_injection(&scope, ctx, request).await {
            Err(Error::FailedPrecondition(Precondition::RevealStateChanged(_))) => {
                Err(Error::precondition(
                    "the credential or the caller's access changed during the request; retry",
                ))
            }
            other => other,
        }
    }

    async fn decide_injection(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        request: &InjectionRequest,
    ) -> Result<InjectionDecision> {
        let mut injections = Vec::with_capacity(request.uses.len());
        let mut refusals = Vec::new();
        for u in &request.uses {
            match self.decide_use(scope, request, u).await? {
                Decided::Allowed(i) => injections.push(i),
                Decided::Refused {
                    reason,
                    credential,
                    grants,
                } => refusals.push((u, reason, credential, grants)),
            }
        }
        if !refusals.is_empty() {
            return Ok(InjectionDecision::Refused(
                self.refuse_injection(scope, ctx, request, refusals).await,
            ));
        }
        let target = &request.target;
        let (host, path) = (target.authority(), target.path.clone());
        for injection in &injections {
            let mut draft = self.credential_draft(
                scope,
                ctx,
                Action::CredentialInject,
                Outcome::Allowed,
                Reason::AllowedByGrant,
                injection.credential(),
            );
            draft.version = Some(injection.version);
            draft.purpose = Some(request.purpose.clone()).filter(|p| !p.is_empty());
            draft.on_behalf_of.clone_from(&request.on_behalf_of);
            draft.detail = Some(AuditDetail::Inject {
                grant: Some(injection.grant),
                host: host.clone(),
                method: request.method.clone(),
                path: path.clone(),
            });
            let principal = scope.principal();
            let check = RevealCheck {
                credential: injection.credential().id,
                version: injection.version,
                principal: principal.id,
                role: principal.role,
                grant: Some(injection.grant),
                binding: Some(scope.binding()),
            };
            // Fail closed: nothing is sent unless every use is recorded,
            // and only if the state it was decided on still holds.
            self.durable(self.store.append_reveal(scope, draft, check, None))
                .await?;
        }
        Ok(InjectionDecision::Allowed(Authorized {
            injections,
            host,
            method: request.method.clone(),
            path,
            purpose: request.purpose.clone(),
            on_behalf_of: request.on_behalf_of.clone(),
        }))
    }

    /// Decides one use; opens the value when allowed.
    async fn decide_use(
        &self,
        scope: &TenantScope<'_>,
        request: &InjectionRequest,
        u: &InjectionUse,
    ) -> Result<Decided> {
        let principal = scope.principal();
        let r = &u.credential;
        let refused = |reason, credential, grants| {
            Ok(Decided::Refused {
                reason,
                credential,
                grants,
            })
        };
        if principal.role == Role::Viewer {
            return refused(Reason::RoleForbidsValues, None, vec![]);
        }
        if !principal.may_enter(&r.environment) {
            return refused(Reason::EnvironmentNotPermitted, None, vec![]);
        }
        let grants = self.grants_for(scope, principal).await?;
        let now = self.now();
        let injecting: Vec<&Grant> = grants
            .iter()
            .filter(|g| {
                g.applies_to(principal)
                    && g.capabilities.allows(Capability::Inject)
                    && g.covers(&r.environment, &r.name)
            })
            .collect();
        let live: Vec<&Grant> = injecting
            .iter()
            .copied()
            .filter(|g| !g.is_expired(now))
            .collect();
        // The grants giving inject, for a refusal's alert (cloned only then).
        let grant_ids = || -> Vec<Grant> { live.iter().map(|g| (*g).clone()).collect() };
        let reference = CredentialRef::Path(r.environment.clone(), r.name.clone());
        let cached = match self.cached_credential(scope, &reference).await {
            Ok(c) => c,
            Err(Error::NotFound(_)) => {
                return refused(Reason::CredentialNotFound, None, vec![]);
            }
            Err(e) => return Err(e),
        };
        let credential = &cached.credential;
        if live.is_empty() {
            let reason = if injecting.is_empty() {
                Reason::NoMatchingGrant
            } else {
                Reason::GrantExpired
            };
            return refused(reason, Some(Box::new(credential.clone())), grant_ids());
        }
        let allowing: Vec<(&Grant, &Destination)> = live
            .iter()
            .flat_map(|g| {
                g.destinations
                    .iter()
                    .filter(|d| d.allows(&request.target, &request.method))
                    .map(move |d| (*g, d))
            })
            .collect();
        if allowing.is_empty() {
            return refused(
                Reason::DestinationNotAllowed,
                Some(Box::new(credential.clone())),
                grant_ids(),
            );
        }
        // A placeholder only where the template puts the value, or where
        // the allowing destination lists.
        let default_template = match &credential.injection {
            Some(_) => None,
            None => InjectionTemplate::default_for(credential.kind),
        };
        let template = credential.injection.as_ref().or(default_template.as_ref());
        let (template_header, template_query) = match &u.kind {
            UseKind::Template => (None, None),
            UseKind::Placeholder(_) => template.map(InjectionTemplate::slot).unwrap_or_default(),
        };
        let Some(&(grant, _)) = allowing.iter().find(|(_, d)| match &u.kind {
            UseKind::Template => true,
            UseKind::Placeholder(_) => {
                let mut headers = d.placeholder_headers.clone();
                headers.extend(template_header.clone());
                let mut query = d.placeholder_query.clone();
                query.extend(template_query.clone());
                slots_allowed(&u.slots, &headers, &query)
            }
        }) else {
            return refused(
                Reason::PlaceholderMisuse,
                Some(Box::new(credential.clone())),
                grant_ids(),
            );
        };
        if let Some(owner) = &credential.owner
            && principal.role != Role::Admin
            && request.on_behalf_of.as_deref() != Some(owner.as_str())
        {
            return refused(
                Reason::OwnerMismatch,
                Some(Box::new(credential.clone())),
                grant_ids(),
            );
        }
        if let Some(why) = credential.unusable(now) {
            return refused(
                super::reveal::unusable_reason(why),
                Some(Box::new(credential.clone())),
                grant_ids(),
            );
        }
        let value = self.open(scope, credential, &cached.current).await?;
        let (material, secrets) = match &u.kind {
            UseKind::Template => {
                let template = template.ok_or_else(|| {
                    Error::invalid(
                        "head.inject",
                        "this credential has no injection template; use a placeholder",
                    )
                })?;
                let (injected, secrets) = template.render(&value).ok_or_else(|| {
                    Error::invalid(
                        "head.inject",
                        "the credential's value lacks the field its template uses",
                    )
                })?;
                (Material::Template(injected), secrets)
            }
            UseKind::Placeholder(placeholder) => {
                let field = match &r.field {
                    Some(f) => Some(f.clone()),
                    None => match &credential.injection {
                        Some(
                            InjectionTemplate::Bearer { field }
                            | InjectionTemplate::Header { field, .. }
                            | InjectionTemplate::Query { field, .. },
                        ) if !field.is_empty() => Some(field.clone()),
                        _ => InjectionTemplate::default_field(&value),
                    },
                };
                let text = field.and_then(|f| value.field(&f)).ok_or_else(|| {
                    Error::invalid(
                        "head.placeholders.credential.field",
                        "name a field of the credential's value",
                    )
                })?;
                (
                    Material::Replace {
                        placeholder: placeholder.clone(),
                        value: text.clone(),
                    },
                    vec![text],
                )
            }
        };
        let version = credential.current_version;
        Ok(Decided::Allowed(Injection {
            cached: Arc::clone(&cached),
            version,
            grant: grant.id,
            grant_expires_at: grant.expires_at,
            material,
            secrets,
        }))
    }

    /// Records the outcome of an authorized request, one event per use. A
    /// failure to record it is logged (the request has happened).
    pub async fn record_injection_result(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        authorized: &Authorized,
        outcome: &InjectionOutcome,
    ) {
        let Ok(scope) = caller.tenant_scope() else {
            return;
        };
        for injection in &authorized.injections {
            // A use cut short records why as its reason code.
            let (result, reason) = match (outcome.cut_short, &outcome.relay_error, outcome.status) {
                (Some(why), _, _) => (Outcome::Error, why),
                (None, None, Some(_)) => (Outcome::Allowed, Reason::AllowedByGrant),
                _ => (Outcome::Error, Reason::AllowedByGrant),
            };
            let mut d = self.credential_draft(
                &scope,
                ctx,
                Action::CredentialInjectResult,
                result,
                reason,
                injection.credential(),
            );
            d.version = Some(injection.version);
            d.purpose = Some(authorized.purpose.clone()).filter(|p| !p.is_empty());
            d.on_behalf_of.clone_from(&authorized.on_behalf_of);
            d.detail = Some(AuditDetail::InjectResult {
                grant: Some(injection.grant),
                host: authorized.host.clone(),
                method: authorized.method.clone(),
                path: authorized.path.clone(),
                status: outcome.status,
                bytes_sent: outcome.bytes_sent,
                bytes_received: outcome.bytes_received,
                duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
                relay_error: outcome.relay_error.clone(),
            });
            if let Err(e) = self.audit(&scope, d).await {
                tracing::error!(error = %e, "could not record an injection result");
            }
        }
    }

    /// What the caller may do with each credential through the relay.
    /// Never a value; credentials the caller may not see answer as
    /// missing ones do.
    pub async fn describe_injection(
        &self,
        caller: &Authenticated,
        refs: &[InjectionRef],
    ) -> Result<Vec<InjectionInfo>> {
        let scope = caller.tenant_scope()?;
        let principal = scope.principal();
        let grants = self.grants_for(&scope, principal).await?;
        let now = self.now();
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            let not = |reason| InjectionInfo {
                allowed: false,
                destinations: vec![],
                has_template: false,
                reason,
            };
            let sees = self.may_see(&scope, &r.environment, &r.name).await?
                || self
                    .allows(&scope, Capability::Inject, &r.environment, &r.name)
                    .await?;
            let reference = CredentialRef::Path(r.environment.clone(), r.name.clone());
            let cached = match self.cached_credential(&scope, &reference).await {
                Ok(c) if sees => c,
                Ok(_) | Err(Error::NotFound(_)) => {
                    out.push(not("not_found"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let credential = &cached.credential;
            let live: Vec<&Grant> =
                if principal.role == Role::Viewer || !principal.may_enter(&r.environment) {
                    vec![]
                } else {
                    grants
                        .iter()
                        .filter(|g| {
                            g.applies_to(principal)
                                && g.capabilities.allows(Capability::Inject)
                                && g.covers(&r.environment, &r.name)
                                && !g.is_expired(now)
                        })
                        .collect()
                };
            let destinations: Vec<Destination> = live
                .iter()
                .flat_map(|g| g.destinations.iter().cloned())
                .collect();
            let has_template = credential.injection.is_some()
                || InjectionTemplate::default_for(credential.kind).is_some();
            let reason = if live.is_empty() {
                "no_grant"
            } else if destinations.is_empty() {
                "no_destinations"
            } else if credential.ensure_usable(now).is_err() {
                "not_usable"
            } else {
                ""
            };
            out.push(InjectionInfo {
                allowed: reason.is_empty(),
                destinations,
                has_template,
                reason,
            });
        }
        Ok(out)
    }
}

/// The secrets of a request's uses, for scrubbing, with the text each is
/// replaced by: the placeholder for a placeholder use, else
/// `[strongroom:ENV/NAME]`.
pub fn scrub_pairs(authorized: &Authorized) -> Vec<(Zeroizing<String>, String)> {
    let mut pairs = Vec::new();
    for i in &authorized.injections {
        let replacement = match &i.material {
            Material::Replace { placeholder, .. } => placeholder.clone(),
            Material::Template(_) => format!(
                "[strongroom:{}/{}]",
                i.credential().environment,
                i.credential().name
            ),
        };
        for s in &i.secrets {
            pairs.push((s.clone(), replacement.clone()));
        }
    }
    pairs
}
