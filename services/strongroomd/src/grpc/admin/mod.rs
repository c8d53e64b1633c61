//! AdminService.

mod convert;
mod transfer;

use std::pin::Pin;

use strongroom_core::Error;
use strongroom_core::ids::{BindingId, PrincipalId, TenantId};
use strongroom_core::names::{Environment, PrincipalName, TenantName};
use strongroom_core::page::PageRequest;
use strongroom_core::principal::{IdentityPattern, PrincipalStatus, parse_namespaces};
use strongroom_core::tenant::TenantStatus;
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::admin_service_server::AdminService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::{Shared, rpc};
use strongroom_engine::{KeyTarget, PrincipalUpdate};

/// Serves AdminService.
#[derive(Clone)]
pub struct AdminHandler(pub Shared);

/// Whose keys a key call acts on: the tenant a platform operator names
/// (required for one), or a tenant admin's own (who names none).
fn key_target(
    caller: &strongroom_core::scope::Authenticated,
    tenant_id: &str,
) -> Result<KeyTarget, Error> {
    if tenant_id.is_empty() {
        if caller.is_platform_operator() && caller.principal().is_none() {
            return Err(Error::invalid(
                "tenant_id",
                "is required for a platform operator",
            ));
        }
        return Ok(KeyTarget::Own);
    }
    Ok(KeyTarget::Tenant(TenantId::parse(tenant_id, "tenant_id")?))
}

/// The fields of a principal UpdatePrincipal may set.
const PRINCIPAL_FIELDS: [&str; 4] = ["name", "role", "environments", "description"];

/// The paths of an update mask: at most 16, each at most 64 characters, no
/// repeats, each one of `fields` (INVALID_ARGUMENT naming the path
/// otherwise); at least one.
pub(crate) fn mask_paths(
    mask: Option<prost_types::FieldMask>,
    fields: &[&'static str],
) -> Result<Vec<&'static str>, Error> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(Error::invalid(
            "update_mask",
            "is required: name the fields to update",
        ));
    }
    if paths.len() > 16 {
        return Err(Error::invalid("update_mask", "has more than 16 paths"));
    }
    let mut named = Vec::with_capacity(paths.len());
    for p in &paths {
        if p.chars().count() > 64 || p.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(Error::invalid(
                "update_mask",
                "a path is longer than 64 characters or not printable ASCII",
            ));
        }
        let Some(field) = fields.iter().find(|f| **f == p.as_str()) else {
            return Err(Error::invalid(
                "update_mask",
                format!("cannot update '{p}' (updatable: {})", fields.join(", ")),
            ));
        };
        if named.contains(field) {
            return Err(Error::invalid("update_mask", format!("names '{p}' twice")));
        }
        named.push(*field);
    }
    Ok(named)
}

/// The change an UpdatePrincipal asks for: the masked fields of `p`.
fn principal_update_in(
    p: pb::Principal,
    mask: Option<prost_types::FieldMask>,
) -> Result<PrincipalUpdate, Error> {
    let mut update = PrincipalUpdate::default();
    for field in mask_paths(mask, &PRINCIPAL_FIELDS)? {
        match field {
            "name" => update.name = Some(PrincipalName::parse(&p.name, "update.name")?),
            "role" => update.role = Some(convert::role_in(p.role, "update.role")?),
            "environments" => {
                update.environments = Some(convert::environments_in(
                    &p.environments,
                    "update.environments",
                )?);
            }
            _ => {
                if p.description.chars().count() > 1024 {
                    return Err(Error::invalid(
                        "update.description",
                        "must be at most 1024 characters",
                    ));
                }
                update.description = Some(p.description.clone());
            }
        }
    }
    Ok(update)
}

fn settings_in(
    s: pb::TenantSettings,
    mask: Option<prost_types::FieldMask>,
    mut current: strongroom_core::tenant::TenantSettings,
) -> Result<
    (
        strongroom_core::tenant::TenantSettings,
        strongroom_engine::NotifierChange,
    ),
    Error,
> {
    let paths: Vec<String> = mask.map(|m| m.paths).unwrap_or_default();
    let all = paths.is_empty();
    let wants = |p: &str| all || paths.iter().any(|x| x == p);
    for p in &paths {
        if !matches!(
            p.as_str(),
            "version_retention"
                | "default_rotation_policy"
                | "max_value_size_bytes"
                | "denied_call_limit"
                | "call_limit"
                | "denial_alert"
                | "revoke_grant_on_leak"
                | "notifier"
                | "access_request_ttl"
        ) {
            return Err(Error::invalid(
                "update_mask",
                format!("cannot update '{p}'"),
            ));
        }
    }
    if wants("version_retention") {
        current.version_retention = s.version_retention;
    }
    if wants("max_value_size_bytes") {
        current.max_value_bytes = s.max_value_size_bytes;
    }
    if wants("default_rotation_policy")
        && let Some(r) = convert::rotation_in(s.default_rotation_policy)?
    {
        current.rotation = r;
    }
    if wants("denied_call_limit")
        && let Some(l) = s.denied_call_limit
    {
        current.denied_call_limit = convert::rate_limit_in(l);
    }
    if wants("call_limit")
        && let Some(l) = s.call_limit
    {
        current.call_limit = convert::rate_limit_in(l);
    }
    if wants("denial_alert")
        && let Some(a) = s.denial_alert
    {
        current.denial_alert = convert::denial_alert_in(a, current.denial_alert)?;
    }
    if wants("revoke_grant_on_leak") {
        current.revoke_grant_on_leak = s.revoke_grant_on_leak;
    }
    if wants("access_request_ttl") {
        current.access_request_ttl_secs = convert::access_request_ttl_in(s.access_request_ttl)?;
    }
    let mut notifier = strongroom_engine::NotifierChange::Keep;
    if wants("notifier")
        && let Some(n) = s.notifier
    {
        notifier = if n.url.is_empty() {
            strongroom_engine::NotifierChange::Clear
        } else {
            strongroom_engine::NotifierChange::Set {
                url: n.url,
                secret: (!n.signing_secret.is_empty())
                    .then(|| zeroize::Zeroizing::new(n.signing_secret)),
            }
        };
    }
    Ok((current, notifier))
}

#[tonic::async_trait]
impl AdminService for AdminHandler {
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        rpc!(request, |call, _req| {
            Ok(pb::WhoAmIResponse {
                identity: call.caller.identity().to_owned(),
                platform_operator: call.caller.is_platform_operator(),
                tenant: call.caller.tenant().map(convert::tenant_out),
                principal: call.caller.principal().map(convert::principal_out),
                identity_binding_id: String::new(),
            })
        })
    }

    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::CreateTenantResponse>, Status> {
        rpc!(idempotent self, request, |this, call, req| {
            let name = TenantName::parse(&req.name, "name")?;
            let admin = req
                .initial_admin
                .map(|a| -> Result<_, Error> {
                    Ok((
                        // The contract names the admin `admin` when the
                        // field is left empty.
                        PrincipalName::parse(
                            if a.name.is_empty() { "admin" } else { &a.name },
                            "initial_admin.name",
                        )?,
                        IdentityPattern::parse(&a.identity, "initial_admin.identity")?,
                    ))
                })
                .transpose()?;
            let namespaces = parse_namespaces(&req.identity_namespaces, "identity_namespaces")?;
            let (tenant, admin) = this
                .0
                .engine
                .create_tenant(&call.caller, call.ctx(), name, admin, namespaces)
                .await?;
            let namespaces = this
                .0
                .engine
                .identity_namespaces(&call.caller, tenant.id, tenant.id)
                .await?;
            Ok(pb::CreateTenantResponse {
                tenant: Some(convert::tenant_with_namespaces(&tenant, &namespaces)),
                admin: admin.as_ref().map(|(p, _)| convert::principal_out(p)),
                admin_binding: admin.as_ref().map(|(_, b)| convert::binding_out(b)),
            })
        })
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        rpc!(request, |call, req| {
            if req.status != 0 {
                return Err(Error::invalid(
                    "status",
                    "filtering tenants by status is not supported yet",
                ));
            }
            let page = PageRequest::parse(req.page_size, &req.page_token)?;
            let result = self.0.engine.list_tenants(&call.caller, &page).await?;
            // The page is ordered by id: one range read covers it.
            let namespaces = match (result.items.first(), result.items.last()) {
                (Some(first), Some(last)) => {
                    self.0
                        .engine
                        .identity_namespaces(&call.caller, first.id, last.id)
                        .await?
                }
                _ => Vec::new(),
            };
            Ok(pb::ListTenantsResponse {
                tenants: result
                    .items
                    .iter()
                    .map(|t| convert::tenant_with_namespaces(t, &namespaces))
                    .collect(),
                next_page_token: result.next_token(),
            })
        })
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::GetTenantResponse>, Status> {
        rpc!(request, |call, req| {
            let id = TenantId::parse(&req.tenant_id, "tenant_id")?;
            let tenant = self.0.engine.get_tenant(&call.caller, id).await?;
            let namespaces = self
                .0
                .engine
                .identity_namespaces(&call.caller, id, id)
                .await?;
            Ok(pb::GetTenantResponse {
                tenant: Some(convert::tenant_with_namespaces(&tenant, &namespaces)),
            })
        })
    }

    async fn set_identity_namespaces(
        &self,
        request: Request<pb::SetIdentityNamespacesRequest>,
    ) -> Result<Response<pb::SetIdentityNamespacesResponse>, Status> {
        rpc!(request, |call, req| {
            let id = TenantId::parse(&req.tenant_id, "tenant_id")?;
            let namespaces = parse_namespaces(&req.identity_namespaces, "identity_namespaces")?;
            self.0
                .engine
                .set_identity_namespaces(&call.caller, call.ctx(), id, namespaces)
                .await?;
            let tenant = self.0.engine.get_tenant(&call.caller, id).await?;
            let namespaces = self
                .0
                .engine
                .identity_namespaces(&call.caller, id, id)
                .await?;
            Ok(pb::SetIdentityNamespacesResponse {
                tenant: Some(convert::tenant_with_namespaces(&tenant, &namespaces)),
            })
        })
    }

    async fn suspend_tenant(
        &self,
        request: Request<pb::SuspendTenantRequest>,
    ) -> Result<Response<pb::SuspendTenantResponse>, Status> {
        rpc!(request, |call, req| {
            let id = TenantId::parse(&req.tenant_id, "tenant_id")?;
            let tenant = self
                .0
                .engine
                .set_tenant_status(
                    &call.caller,
                    call.ctx(),
                    id,
                    TenantStatus::Suspended,
                    &req.reason,
                )
                .await?;
            Ok(pb::SuspendTenantResponse {
                tenant: Some(convert::tenant_out(&tenant)),
            })
        })
    }

    async fn resume_tenant(
        &self,
        request: Request<pb::ResumeTenantRequest>,
    ) -> Result<Response<pb::ResumeTenantResponse>, Status> {
        rpc!(request, |call, req| {
            let id = TenantId::parse(&req.tenant_id, "tenant_id")?;
            let tenant = self
                .0
                .engine
                .set_tenant_status(&call.caller, call.ctx(), id, TenantStatus::Active, "")
                .await?;
            Ok(pb::ResumeTenantResponse {
                tenant: Some(convert::tenant_out(&tenant)),
            })
        })
    }

    async fn shred_tenant(
        &self,
        request: Request<pb::ShredTenantRequest>,
    ) -> Result<Response<pb::ShredTenantResponse>, Status> {
        rpc!(request, |call, req| {
            let id = TenantId::parse(&req.tenant_id, "tenant_id")?;
            let shredded = self
                .0
                .engine
                .shred_tenant(
                    &call.caller,
                    call.ctx(),
                    id,
                    &req.confirm_name,
                    &req.reason,
                    req.purge,
                )
                .await?;
            Ok(pb::ShredTenantResponse {
                tenant: Some(convert::tenant_out(&shredded.tenant)),
                purged: shredded.purged,
            })
        })
    }

    async fn create_principal(
        &self,
        request: Request<pb::CreatePrincipalRequest>,
    ) -> Result<Response<pb::CreatePrincipalResponse>, Status> {
        rpc!(idempotent self, request, |this, call, req| {
            let name = PrincipalName::parse(&req.name, "name")?;
            let role = convert::role_in(req.role, "role")?;
            let envs = convert::environments_in(&req.environments, "environments")?;
            let p = this
                .0
                .engine
                .create_principal(&call.caller, call.ctx(), name, role, envs, req.description)
                .await?;
            Ok(pb::CreatePrincipalResponse {
                principal: Some(convert::principal_out(&p)),
            })
        })
    }

    async fn get_principal(
        &self,
        request: Request<pb::GetPrincipalRequest>,
    ) -> Result<Response<pb::GetPrincipalResponse>, Status> {
        rpc!(request, |call, req| {
            let id = PrincipalId::parse(&req.principal_id, "principal_id")?;
            let p = self
                .0
                .engine
                .get_principal(&call.caller, call.ctx(), id)
                .await?;
            Ok(pb::GetPrincipalResponse {
                principal: Some(convert::principal_out(&p)),
            })
        })
    }

    async fn list_principals(
        &self,
        request: Request<pb::ListPrincipalsRequest>,
    ) -> Result<Response<pb::ListPrincipalsResponse>, Status> {
        rpc!(request, |call, req| {
            let role = if req.role == 0 {
                None
            } else {
                Some(convert::role_in(req.role, "role")?)
            };
            let page = PageRequest::parse(req.page_size, &req.page_token)?;
            let result = self
                .0
                .engine
                .list_principals(&call.caller, call.ctx(), &page)
                .await?;
            Ok(pb::ListPrincipalsResponse {
                principals: result
                    .items
                    .iter()
                    .filter(|p| role.is_none_or(|r| p.role == r))
                    .filter(|p| p.name.as_str().starts_with(&req.name_prefix))
                    .map(convert::principal_out)
                    .collect(),
                next_page_token: result.next_token(),
            })
        })
    }

    async fn update_principal(
        &self,
        request: Request<pb::UpdatePrincipalRequest>,
    ) -> Result<Response<pb::UpdatePrincipalResponse>, Status> {
        rpc!(request, |call, req| {
            let id = PrincipalId::parse(&req.principal_id, "principal_id")?;
            let update = principal_update_in(req.update.unwrap_or_default(), req.update_mask)?;
            let (p, leases_ended) = self
                .0
                .engine
                .update_principal(&call.caller, call.ctx(), id, update)
                .await?;
            Ok(pb::UpdatePrincipalResponse {
                principal: Some(convert::principal_out(&p)),
                leases_ended,
            })
        })
    }

    async fn disable_principal(
        &self,
        request: Request<pb::DisablePrincipalRequest>,
    ) -> Result<Response<pb::DisablePrincipalResponse>, Status> {
        rpc!(request, |call, req| {
            let id = PrincipalId::parse(&req.principal_id, "principal_id")?;
            let (p, leases_ended) = self
                .0
                .engine
                .set_principal_status(
                    &call.caller,
                    call.ctx(),
                    id,
                    PrincipalStatus::Disabled,
                    &req.reason,
                )
                .await?;
            Ok(pb::DisablePrincipalResponse {
                principal: Some(convert::principal_out(&p)),
                leases_ended,
            })
        })
    }

    async fn enable_principal(
        &self,
        request: Request<pb::EnablePrincipalRequest>,
    ) -> Result<Response<pb::EnablePrincipalResponse>, Status> {
        rpc!(request, |call, req| {
            let id = PrincipalId::parse(&req.principal_id, "principal_id")?;
            let (p, _) = self
                .0
                .engine
                .set_principal_status(&call.caller, call.ctx(), id, PrincipalStatus::Active, "")
                .await?;
            Ok(pb::EnablePrincipalResponse {
                principal: Some(convert::principal_out(&p)),
            })
        })
    }

    async fn emergency_revoke_principal(
        &self,
        request: Request<pb::EmergencyRevokePrincipalRequest>,
    ) -> Result<Response<pb::EmergencyRevokePrincipalResponse>, Status> {
        rpc!(request, |call, req| {
            let id = PrincipalId::parse(&req.principal_id, "principal_id")?;
            let cut = self
                .0
                .engine
                .emergency_revoke_principal(&call.caller, call.ctx(), id, &req.reason)
                .await?;
            Ok(pb::EmergencyRevokePrincipalResponse {
                principal: Some(convert::principal_out(&cut.principal)),
                grants_revoked: cut.grants_revoked,
                leases_ended: cut.leases_ended,
                bindings_deleted: cut.bindings_deleted,
            })
        })
    }

    async fn create_identity_binding(
        &self,
        request: Request<pb::CreateIdentityBindingRequest>,
    ) -> Result<Response<pb::CreateIdentityBindingResponse>, Status> {
        rpc!(idempotent self, request, |this, call, req| {
            let principal = PrincipalId::parse(&req.principal_id, "principal_id")?;
            let pattern = IdentityPattern::parse(&req.identity, "identity")?;
            let b = this
                .0
                .engine
                .create_binding(&call.caller, call.ctx(), principal, pattern)
                .await?;
            Ok(pb::CreateIdentityBindingResponse {
                binding: Some(convert::binding_out(&b)),
            })
        })
    }

    async fn list_identity_bindings(
        &self,
        request: Request<pb::ListIdentityBindingsRequest>,
    ) -> Result<Response<pb::ListIdentityBindingsResponse>, Status> {
        rpc!(request, |call, req| {
            let principal = (!req.principal_id.is_empty())
                .then(|| PrincipalId::parse(&req.principal_id, "principal_id"))
                .transpose()?;
            let page = PageRequest::parse(req.page_size, &req.page_token)?;
            let result = self
                .0
                .engine
                .list_bindings(&call.caller, call.ctx(), principal, &page)
                .await?;
            Ok(pb::ListIdentityBindingsResponse {
                bindings: result.items.iter().map(convert::binding_out).collect(),
                next_page_token: result.next_token(),
            })
        })
    }

    async fn delete_identity_binding(
        &self,
        request: Request<pb::DeleteIdentityBindingRequest>,
    ) -> Result<Response<pb::DeleteIdentityBindingResponse>, Status> {
        rpc!(request, |call, req| {
            let id = BindingId::parse(&req.binding_id, "binding_id")?;
            self.0
                .engine
                .delete_binding(&call.caller, call.ctx(), id)
                .await?;
            Ok(pb::DeleteIdentityBindingResponse {})
        })
    }

    async fn create_environment(
        &self,
        request: Request<pb::CreateEnvironmentRequest>,
    ) -> Result<Response<pb::CreateEnvironmentResponse>, Status> {
        rpc!(idempotent self, request, |this, call, req| {
            let env = Environment::parse(&req.name, "name")?;
            this.0
                .engine
                .create_environment(&call.caller, call.ctx(), env.clone())
                .await?;
            Ok(pb::CreateEnvironmentResponse {
                environment: Some(pb::Environment {
                    name: env.to_string(),
                    description: req.description,
                    built_in: false,
                    created_at: Some(convert::time_out(this.0.engine.now())),
                    credential_count: 0,
                }),
            })
        })
    }

    async fn list_environments(
        &self,
        request: Request<pb::ListEnvironmentsRequest>,
    ) -> Result<Response<pb::ListEnvironmentsResponse>, Status> {
        rpc!(request, |call, _req| {
            let envs = self.0.engine.list_environments(&call.caller).await?;
            Ok(pb::ListEnvironmentsResponse {
                environments: envs
                    .iter()
                    .map(|e| pb::Environment {
                        name: e.to_string(),
                        description: String::new(),
                        built_in: strongroom_core::names::DEFAULT_ENVIRONMENTS
                            .contains(&e.as_str()),
                        created_at: None,
                        credential_count: 0,
                    })
                    .collect(),
                next_page_token: String::new(),
            })
        })
    }

    async fn delete_environment(
        &self,
        request: Request<pb::DeleteEnvironmentRequest>,
    ) -> Result<Response<pb::DeleteEnvironmentResponse>, Status> {
        rpc!(request, |call, req| {
            let env = Environment::parse(&req.name, "name")?;
            self.0
                .engine
                .delete_environment(&call.caller, call.ctx(), env)
                .await?;
            Ok(pb::DeleteEnvironmentResponse {})
        })
    }

    async fn rotate_root_key(
        &self,
        request: Request<pb::RotateRootKeyRequest>,
    ) -> Result<Response<pb::RotateRootKeyResponse>, Status> {
        rpc!(idempotent self, request, |this, call, _req| {
            let done = this
                .0
                .engine
                .rotate_root_key(&call.caller, call.ctx())
                .await?;
            Ok(pb::RotateRootKeyResponse {
                previous_key_id: done.previous_key_id,
                new_key_id: done.new_key_id,
                keys_rewrapped: done.keys_rewrapped,
                tenants: done.tenants,
            })
        })
    }

    async fn rotate_tenant_key(
        &self,
        request: Request<pb::RotateTenantKeyRequest>,
    ) -> Result<Response<pb::RotateTenantKeyResponse>, Status> {
        rpc!(idempotent self, request, |this, call, req| {
            let target = key_target(&call.caller, &req.tenant_id)?;
            let (kek_version, data_keys_pending) = this
                .0
                .engine
                .rotate_tenant_key(&call.caller, call.ctx(), target)
                .await?;
            Ok(pb::RotateTenantKeyResponse {
                kek_version,
                data_keys_pending,
            })
        })
    }

    async fn get_tenant_key_status(
        &self,
        request: Request<pb::GetTenantKeyStatusRequest>,
    ) -> Result<Response<pb::GetTenantKeyStatusResponse>, Status> {
        rpc!(request, |call, req| {
            let target = key_target(&call.caller, &req.tenant_id)?;
            let status = self
                .0
                .engine
                .tenant_key_status(&call.caller, call.ctx(), target)
                .await?;
            Ok(convert::key_status_out(status))
        })
    }

    async fn retire_tenant_key(
        &self,
        request: Request<pb::RetireTenantKeyRequest>,
    ) -> Result<Response<pb::RetireTenantKeyResponse>, Status> {
        rpc!(idempotent self, request, |this, call, req| {
            let target = key_target(&call.caller, &req.tenant_id)?;
            this.0
                .engine
                .retire_tenant_key(&call.caller, call.ctx(), target, req.kek_version)
                .await?;
            Ok(pb::RetireTenantKeyResponse {})
        })
    }

    type ExportTenantStream =
        Pin<Box<dyn Stream<Item = Result<pb::ExportTenantResponse, Status>> + Send>>;

    async fn export_tenant(
        &self,
        request: Request<pb::ExportTenantRequest>,
    ) -> Result<Response<Self::ExportTenantStream>, Status> {
        let stream = transfer::export(&self.0, request).await?.into_inner();
        Ok(Response::new(Box::pin(stream)))
    }

    async fn import_tenant(
        &self,
        request: Request<Streaming<pb::ImportTenantRequest>>,
    ) -> Result<Response<pb::ImportTenantResponse>, Status> {
        transfer::import(&self.0, request).await
    }

    async fn rotation_status_overview(
        &self,
        request: Request<pb::RotationStatusOverviewRequest>,
    ) -> Result<Response<pb::RotationStatusOverviewResponse>, Status> {
        rpc!(request, |call, req| {
            let filter = convert::overview_filter_in(&req)?;
            let page = PageRequest::parse(req.page_size, &req.page_token)?;
            let overview = self
                .0
                .engine
                .rotation_overview(&call.caller, call.ctx(), &filter, &page)
                .await?;
            let rotation = call
                .caller
                .tenant()
                .map(|t| t.settings.rotation)
                .unwrap_or_default();
            Ok(convert::overview_out(
                &overview,
                &rotation,
                self.0.engine.now(),
            ))
        })
    }

    async fn get_tenant_settings(
        &self,
        request: Request<pb::GetTenantSettingsRequest>,
    ) -> Result<Response<pb::GetTenantSettingsResponse>, Status> {
        rpc!(request, |call, _req| {
            let tenant = self.0.engine.tenant(&call.caller).await?;
            let l = self.0.engine.limits();
            Ok(pb::GetTenantSettingsResponse {
                settings: Some(convert::settings_out(&tenant.settings, l)),
            })
        })
    }

    async fn update_tenant_settings(
        &self,
        request: Request<pb::UpdateTenantSettingsRequest>,
    ) -> Result<Response<pb::UpdateTenantSettingsResponse>, Status> {
        rpc!(request, |call, req| {
            let current = self.0.engine.tenant(&call.caller).await?.settings;
            let (settings, notifier) = settings_in(
                convert::required(req.settings, "settings")?,
                req.update_mask,
                current,
            )?;
            let tenant = self
                .0
                .engine
                .update_settings(&call.caller, call.ctx(), settings, notifier)
                .await?;
            let l = self.0.engine.limits();
            Ok(pb::UpdateTenantSettingsResponse {
                settings: Some(convert::settings_out(&tenant.settings, l)),
            })
        })
    }
}
