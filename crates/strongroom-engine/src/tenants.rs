//! Tenants: their lifecycle (platform operators) and their settings.

use strongroom_core::audit::{Action, AuditDetail, Outcome};
use strongroom_core::ids::{BindingId, PrincipalId, TenantId};
use strongroom_core::names::{DEFAULT_ENVIRONMENTS, Environment, PrincipalName, TenantName};
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::policy::Reason;
use strongroom_core::principal::{
    IdentityBinding, IdentityPattern, Principal, PrincipalStatus, Role,
};
use strongroom_core::scope::{Authenticated, PlatformScope, TenantScope};
use strongroom_core::store::{NewTenant, TenantShredded};
use strongroom_core::tenant::{
    NOTIFIER_SECRET_LEN, NotifierSetting, Tenant, TenantSettings, TenantStatus, WrappedKekRecord,
    validate_notifier_url,
};
use strongroom_core::{Error, Precondition, Result};
use strongroom_crypto::Kek;
use zeroize::Zeroizing;

use crate::keyring::crypto_error;
use crate::{CallContext, Engine};

impl Engine {
    /// Creates a tenant with its first KEK, the default environments and,
    /// optionally, its first admin bound to `admin_identity`.
    pub async fn create_tenant(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        name: TenantName,
        admin: Option<(PrincipalName, IdentityPattern)>,
        namespaces: Vec<IdentityPattern>,
    ) -> Result<(Tenant, Option<(Principal, IdentityBinding)>)> {
        let scope = caller.platform_scope()?;
        self.check_assignment(&namespaces)?;
        if let Some((_, pattern)) = &admin
            && !namespaces.iter().any(|n| n.covers(pattern))
        {
            return Err(Error::invalid(
                "initial_admin.identity",
                "must lie inside the tenant's identity_namespaces",
            ));
        }
        let now = self.now();
        let tenant = Tenant {
            id: TenantId::generate(),
            name,
            status: TenantStatus::Active,
            settings: TenantSettings::default(),
            current_kek_version: 1,
            created_at: now,
        };
        let kek = Kek::generate().map_err(crypto_error)?;
        let wrapped = self.keyring.wrap(tenant.id, 1, &kek)?;
        let admin = admin.map(|(name, pattern)| {
            let principal = Principal {
                id: PrincipalId::generate(),
                tenant: tenant.id,
                name,
                role: Role::Admin,
                environments: Vec::new(),
                description: "initial tenant admin".into(),
                status: PrincipalStatus::Active,
                created_at: now,
            };
            let binding = IdentityBinding {
                id: BindingId::generate(),
                tenant: tenant.id,
                principal: principal.id,
                pattern,
                created_at: now,
            };
            (principal, binding)
        });
        let environments = DEFAULT_ENVIRONMENTS
            .iter()
            .map(|e| Environment::parse(e, "environment"))
            .collect::<Result<Vec<_>>>()?;
        let new = NewTenant {
            tenant: tenant.clone(),
            kek: WrappedKekRecord {
                tenant: tenant.id,
                version: 1,
                wrapped: wrapped.to_bytes(),
                created_at: now,
            },
            environments,
            admin: admin.clone(),
            namespaces,
        };
        let mut draft = self.platform_draft(&scope, ctx, Action::TenantCreate);
        draft.detail = Some(AuditDetail::Tenant {
            name: tenant.name.to_string(),
        });
        self.commit(tenant.id, draft, |draft| {
            self.store.create_tenant(&scope, &new, draft)
        })
        .await?;
        Ok((tenant, admin))
    }

    /// Lists tenants (platform operators only).
    pub async fn list_tenants(
        &self,
        caller: &Authenticated,
        page: &PageRequest,
    ) -> Result<Page<Tenant>> {
        let scope = caller.platform_scope()?;
        self.store.list_tenants(&scope, page).await
    }

    /// Reads a tenant (platform operators only).
    pub async fn get_tenant(&self, caller: &Authenticated, id: TenantId) -> Result<Tenant> {
        let scope = caller.platform_scope()?;
        self.store.get_tenant(&scope, id).await
    }

    /// Suspends or resumes a tenant (platform operators only).
    pub async fn set_tenant_status(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        id: TenantId,
        status: TenantStatus,
        reason: &str,
    ) -> Result<Tenant> {
        let scope: PlatformScope<'_> = caller.platform_scope()?;
        let current = self.store.get_tenant(&scope, id).await?;
        if current.status == TenantStatus::Shredded {
            return Err(Error::precondition("the tenant was shredded"));
        }
        let mut draft = self.platform_draft(&scope, ctx, Action::TenantStatus);
        draft.detail = Some(AuditDetail::TenantStatus {
            status,
            reason: reason.to_owned(),
        });
        self.commit(id, draft, |draft| {
            self.store.set_tenant_status(&scope, id, status, draft)
        })
        .await
    }

    /// Refuses with [`Precondition::TenantShredded`] if the scope's tenant
    /// is shredded as stored now: a decision found stale at its commit may
    /// have been taken by a caller authenticated before a shred (on this
    /// server or another), whose scope still says active.
    pub(crate) async fn refuse_shredded(&self, scope: &TenantScope<'_>) -> Result<()> {
        if self.store.tenant(scope).await?.status == TenantStatus::Shredded {
            return Err(Error::FailedPrecondition(Precondition::TenantShredded));
        }
        Ok(())
    }

    /// Crypto-shreds a tenant (platform operators only): `confirm_name`
    /// must be its name (`InvalidArgument` naming `confirm_name`, and
    /// nothing changes otherwise). Destroys its wrapped KEKs and sealed
    /// values and marks it shredded, in one transaction recorded in the
    /// platform chain, then forgets its unwrapped keys here; the store's
    /// change notice makes every other server forget them too. From then
    /// on every use of its values fails with
    /// [`Precondition::TenantShredded`], on every server. With `purge`, its
    /// metadata and audit chain go too. Idempotent: a repeat writes
    /// nothing and reports the tenant as it is.
    pub async fn shred_tenant(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        id: TenantId,
        confirm_name: &str,
        reason: &str,
        purge: bool,
    ) -> Result<TenantShredded> {
        let scope: PlatformScope<'_> = caller.platform_scope()?;
        if reason.trim().is_empty() {
            return Err(Error::invalid("reason", "is required"));
        }
        let current = self.store.get_tenant(&scope, id).await?;
        if current.name.as_str() != confirm_name {
            return Err(Error::invalid(
                "confirm_name",
                "must equal the name of the tenant to shred",
            ));
        }
        let mut draft = self.platform_draft(&scope, ctx, Action::TenantShred);
        draft.detail = Some(AuditDetail::TenantShred {
            tenant: id,
            name: current.name.to_string(),
            reason: reason.to_owned(),
            keys_destroyed: 0,
            values_destroyed: 0,
            purged: purge,
        });
        let shredded = self
            .commit(id, draft, |draft| {
                self.store.shred_tenant(&scope, id, purge, draft)
            })
            .await?;
        // Also when repeated: a server that missed the notice forgets now.
        self.keyring.evict_tenant(id);
        Ok(shredded)
    }

    /// The caller's tenant as stored now.
    pub async fn tenant(&self, caller: &Authenticated) -> Result<Tenant> {
        let scope = caller.tenant_scope()?;
        self.store.tenant(&scope).await
    }

    /// Replaces the tenant's settings (admin), applying `notifier` (a new
    /// signing secret is sealed here; the plaintext goes no further).
    pub async fn update_settings(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        mut settings: TenantSettings,
        notifier: NotifierChange,
    ) -> Result<Tenant> {
        let scope = caller.tenant_scope()?;
        self.require_admin(&scope, ctx, Action::TenantSettings)
            .await?;
        match notifier {
            NotifierChange::Keep => {}
            NotifierChange::Clear => settings.notifier = None,
            NotifierChange::Set { url, secret } => {
                validate_notifier_url(&url, "settings.notifier.url")?;
                let sealed_secret = match secret {
                    Some(secret) => {
                        if !NOTIFIER_SECRET_LEN.contains(&secret.len()) {
                            return Err(Error::invalid(
                                "settings.notifier.signing_secret",
                                "must be 16-256 bytes",
                            ));
                        }
                        let tenant = self.store.tenant(&scope).await?;
                        let kek = self.kek(&scope, tenant.current_kek_version).await?;
                        crate::notify::seal_secret(
                            &kek,
                            tenant.current_kek_version,
                            scope.tenant_id(),
                            &secret,
                        )?
                    }
                    None => match settings.notifier.take() {
                        Some(old) => old.sealed_secret,
                        None => {
                            return Err(Error::invalid(
                                "settings.notifier.signing_secret",
                                "required when no notifier is set yet",
                            ));
                        }
                    },
                };
                settings.notifier = Some(NotifierSetting { url, sealed_secret });
            }
        }
        settings.validate()?;
        if let Some(ttl) = settings.access_request_ttl_secs
            && std::time::Duration::from_secs(u64::from(ttl)) > self.limits.max_access_request_ttl
        {
            return Err(Error::invalid(
                "settings.access_request_ttl",
                format!(
                    "must be at most the server's maximum, {} seconds",
                    self.limits.max_access_request_ttl.as_secs()
                ),
            ));
        }
        let draft = self.draft(
            &scope,
            ctx,
            Action::TenantSettings,
            Outcome::Allowed,
            Reason::AllowedByRole,
        );
        self.commit(scope.tenant_id(), draft, |draft| {
            self.store.update_tenant_settings(&scope, &settings, draft)
        })
        .await
    }
}

/// What an update does to the tenant's notifier.
pub enum NotifierChange {
    /// Leaves it as it is.
    Keep,
    /// Removes it.
    Clear,
    /// Sets the URL and, if given, a new signing secret (without one, the
    /// current secret stays; there must be one).
    Set {
        /// The https URL.
        url: String,
        /// The new signing secret, in the clear until sealed.
        secret: Option<Zeroizing<Vec<u8>>>,
    },
}

impl std::fmt::Debug for NotifierChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Keep => f.write_str("Keep"),
            Self::Clear => f.write_str("Clear"),
            Self::Set { url, secret } => f
                .debug_struct("Set")
                .field("url", url)
                .field("secret", &secret.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}
