//! CredentialService.

pub(super) mod convert;

use strongroom_core::Error;
use strongroom_core::credential::{Credential, CredentialFilter, CredentialUpdate};
use strongroom_core::ids::{LeaseId, PrincipalId};
use strongroom_core::names::{CredentialName, Environment, ServiceLabel};
use strongroom_core::page::PageRequest;
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::credential_service_server::CredentialService;
use tonic::{Request, Response, Status};

use super::{Shared, rpc};
use convert::{credential_out, id_out, required};
use strongroom_engine::{
    NewCredential, NewValue, RevealOptions, Revealed, RevealedValue, ScanOptions,
};

/// Serves CredentialService.
#[derive(Clone)]
pub struct CredentialHandler(pub Shared);

fn reveal_options(
    purpose: String,
    on_behalf_of: String,
    field: String,
    version: u32,
    lease_ttl: Option<prost_types::Duration>,
) -> Result<RevealOptions, Error> {
    if purpose.len() > 1024 {
        return Err(Error::invalid("purpose", "must be at most 1024 characters"));
    }
    if on_behalf_of.len() > 256 {
        return Err(Error::invalid(
            "on_behalf_of",
            "must be at most 256 characters",
        ));
    }
    Ok(RevealOptions {
        purpose,
        on_behalf_of: (!on_behalf_of.is_empty()).then_some(on_behalf_of),
        field: (!field.is_empty()).then_some(field),
        version: (version != 0).then_some(version),
        lease_ttl: lease_ttl
            .as_ref()
            .map(|d| convert::duration_in(d, "lease_ttl"))
            .transpose()?,
    })
}

fn lease_out(l: &strongroom_engine::Lease) -> pb::Lease {
    use strongroom_core::lease::LeaseState;
    pb::Lease {
        lease_id: id_out(l.id.as_uuid()),
        ttl: Some(convert::duration_out(l.ttl)),
        expires_at: Some(convert::time_out(l.expires_at)),
        max_expires_at: Some(convert::time_out(l.max_expires_at)),
        credential_id: id_out(l.credential.as_uuid()),
        credential_name: l.credential_name.as_str().to_owned(),
        environment: l.environment.as_str().to_owned(),
        version: l.version,
        principal_id: id_out(l.principal.as_uuid()),
        grant_id: l.grant.map(|g| id_out(g.as_uuid())).unwrap_or_default(),
        on_behalf_of: l.on_behalf_of.clone().unwrap_or_default(),
        purpose: l.purpose.clone().unwrap_or_default(),
        issued_at: Some(convert::time_out(l.issued_at)),
        state: match l.state {
            LeaseState::Active => pb::LeaseState::Active,
            LeaseState::Released => pb::LeaseState::Released,
            LeaseState::Expired => pb::LeaseState::Expired,
            LeaseState::Revoked => pb::LeaseState::Revoked,
        } as i32,
        ended_at: l.ended_at.map(convert::time_out),
        end_reason: l.end.map(|e| e.as_str().to_owned()).unwrap_or_default(),
    }
}

/// Parses a lease state filter.
fn lease_state_in(v: i32) -> Result<Option<strongroom_core::lease::LeaseState>, Error> {
    use strongroom_core::lease::LeaseState;
    Ok(
        match pb::LeaseState::try_from(v).map_err(|_| Error::invalid("state", "unknown state"))? {
            pb::LeaseState::Unspecified => None,
            pb::LeaseState::Active => Some(LeaseState::Active),
            pb::LeaseState::Released => Some(LeaseState::Released),
            pb::LeaseState::Expired => Some(LeaseState::Expired),
            pb::LeaseState::Revoked => Some(LeaseState::Revoked),
        },
    )
}

/// The fields of a credential UpdateCredential may set.
const CREDENTIAL_FIELDS: [&str; 8] = [
    "description",
    "tags",
    "scopes",
    "expires_at",
    "owner",
    "rotation_policy",
    "injection_template",
    "service",
];

/// The earliest and latest seconds a protobuf timestamp may carry
/// (0001-01-01 and 9999-12-31, as `google.protobuf.Timestamp` defines).
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// The change an UpdateCredential asks for: the masked fields of `c`, each
/// parsed and named as `update.<field>` when refused. An empty owner,
/// unset expiry, rotation policy or injection template clears it.
fn credential_update_in(
    c: pb::Credential,
    mask: Option<prost_types::FieldMask>,
) -> Result<CredentialUpdate, Error> {
    let mut update = CredentialUpdate::default();
    for field in super::admin::mask_paths(mask, &CREDENTIAL_FIELDS)? {
        match field {
            "service" => {
                update.service = Some(ServiceLabel::parse(&c.service, "update.service")?);
            }
            "description" => update.description = Some(c.description.clone()),
            "tags" => {
                update.tags =
                    Some(convert::tags_in(c.tags.clone()).map_err(|e| e.within("update"))?);
            }
            "scopes" => {
                update.scopes =
                    Some(convert::scopes_in(c.scopes.clone()).map_err(|e| e.within("update"))?);
            }
            "owner" => update.owner = Some(Some(c.owner.clone()).filter(|o| !o.is_empty())),
            "expires_at" => {
                let at = match &c.expires_at {
                    None => None,
                    Some(t) => {
                        if !TIMESTAMP_SECONDS.contains(&t.seconds)
                            || !(0..1_000_000_000).contains(&t.nanos)
                        {
                            return Err(Error::invalid(
                                "update.expires_at",
                                "must be a valid timestamp (years 1-9999)",
                            ));
                        }
                        Some(convert::time_in(t))
                    }
                };
                update.expires_at = Some(at);
            }
            "rotation_policy" => {
                update.rotation =
                    Some(convert::rotation_in(c.rotation_policy).map_err(|e| e.within("update"))?);
            }
            _ => {
                update.injection = Some(
                    convert::injection_in(c.injection_template.clone())
                        .map_err(|e| e.within("update"))?,
                );
            }
        }
    }
    Ok(update)
}

impl CredentialHandler {
    fn tenant_rotation(call: &super::Call) -> strongroom_core::credential::RotationPolicy {
        call.caller
            .tenant()
            .map(|t| t.settings.rotation)
            .unwrap_or_default()
    }

    /// Credential metadata as returned to the caller: statuses as of the
    /// engine's clock, rotation against the tenant's default policy.
    fn credential_out(&self, call: &super::Call, c: &Credential) -> pb::Credential {
        credential_out(c, &Self::tenant_rotation(call), self.0.engine.now())
    }
}

#[tonic::async_trait]
impl CredentialService for CredentialHandler {
    async fn create_credential(
        &self,
        request: Request<pb::CreateCredentialRequest>,
    ) -> Result<Response<pb::CreateCredentialResponse>, Status> {
        rpc!(idempotent self, request, |this, call, req| {
            let new = NewCredential {
                environment: Environment::parse(&req.environment, "environment")?,
                name: CredentialName::parse(&req.name, "name")?,
                service: ServiceLabel::parse(&req.service, "service")?,
                value: convert::value_in(req.value)?,
                description: req.description,
                tags: convert::tags_in(req.tags)?,
                scopes: convert::scopes_in(req.scopes)?,
                owner: (!req.owner.is_empty()).then_some(req.owner),
                expires_at: req.expires_at.as_ref().map(convert::time_in),
                rotation: convert::rotation_in(req.rotation_policy)?,
                injection: convert::injection_in(req.injection_template)?,
            };
            let c = this
                .0
                .engine
                .create_credential(&call.caller, call.ctx(), new)
                .await?;
            Ok(pb::CreateCredentialResponse {
                credential: Some(this.credential_out(&call, &c)),
            })
        })
    }

    async fn get_credential(
        &self,
        request: Request<pb::GetCredentialRequest>,
    ) -> Result<Response<pb::GetCredentialResponse>, Status> {
        rpc!(request, |call, req| {
            let r = convert::credential_ref(req.credential)?;
            let c = self
                .0
                .engine
                .get_credential(&call.caller, call.ctx(), &r)
                .await?;
            Ok(pb::GetCredentialResponse {
                credential: Some(self.credential_out(&call, &c)),
            })
        })
    }

    async fn list_credentials(
        &self,
        request: Request<pb::ListCredentialsRequest>,
    ) -> Result<Response<pb::ListCredentialsResponse>, Status> {
        rpc!(request, |call, req| {
            let filter = CredentialFilter {
                environment: (!req.environment.is_empty())
                    .then(|| Environment::parse(&req.environment, "environment"))
                    .transpose()?,
                service: (!req.service.is_empty())
                    .then(|| ServiceLabel::parse(&req.service, "service"))
                    .transpose()?,
                kind: convert::credential_type_in(req.credential_type, "credential_type")?,
                status: convert::credential_status_in(req.status, "status")?,
                tag: (!req.tag.is_empty())
                    .then(|| strongroom_core::names::Tag::parse(&req.tag, "tag"))
                    .transpose()?,
                name_prefix: (!req.name_prefix.is_empty()).then_some(req.name_prefix),
                reach: None,
                unowned_only: false,
            };
            if req.rotation_status != 0 {
                return Err(Error::invalid(
                    "rotation_status",
                    "filtering by rotation status is not supported yet",
                ));
            }
            let page = PageRequest::parse(req.page_size, &req.page_token)?;
            let result = self
                .0
                .engine
                .list_credentials(&call.caller, &filter, &page)
                .await?;
            let rotation = Self::tenant_rotation(&call);
            let now = self.0.engine.now();
            Ok(pb::ListCredentialsResponse {
                credentials: result
                    .items
                    .iter()
                    .map(|c| credential_out(c, &rotation, now))
                    .collect(),
                next_page_token: result.next_token(),
            })
        })
    }

    async fn update_credential(
        &self,
        request: Request<pb::UpdateCredentialRequest>,
    ) -> Result<Response<pb::UpdateCredentialResponse>, Status> {
        rpc!(request, |call, req| {
            let r = convert::credential_ref(req.credential)?;
            let update = credential_update_in(req.update.unwrap_or_default(), req.update_mask)?;
            let (c, leases_ended) = self
                .0
                .engine
                .update_credential(&call.caller, call.ctx(), &r, update)
                .await?;
            Ok(pb::UpdateCredentialResponse {
                credential: Some(self.credential_out(&call, &c)),
                leases_ended,
            })
        })
    }

    async fn emergency_revoke_credential(
        &self,
        request: Request<pb::EmergencyRevokeCredentialRequest>,
    ) -> Result<Response<pb::EmergencyRevokeCredentialResponse>, Status> {
        rpc!(idempotent self, request, |this, call, req| {
            let r = convert::credential_ref(req.credential)?;
            let generate = req.generate.map(convert::generation_in).transpose()?;
            let cut = this
                .0
                .engine
                .emergency_revoke_credential(&call.caller, call.ctx(), &r, &req.reason, generate)
                .await?;
            Ok(pb::EmergencyRevokeCredentialResponse {
                credential: Some(this.credential_out(&call, &cut.credential)),
                revoked_version: cut.revoked_version,
                new_version: cut.new_version.unwrap_or(0),
                leases_ended: cut.leases_ended,
                grant_ids: cut.grants.iter().map(ToString::to_string).collect(),
            })
        })
    }

    async fn reveal_credential(
        &self,
        request: Request<pb::RevealCredentialRequest>,
    ) -> Result<Response<pb::RevealCredentialResponse>, Status> {
        rpc!(request, |call, req| {
            let r = convert::credential_ref(req.credential)?;
            let options = reveal_options(
                req.purpose,
                req.on_behalf_of,
                req.field,
                req.version,
                req.lease_ttl,
            )?;
            let revealed = self
                .0
                .engine
                .reveal(&call.caller, call.ctx(), &r, &options)
                .await?;
            let (credential, version, value, lease) =
                revealed_parts(&revealed, self.credential_out(&call, &revealed.credential));
            Ok(pb::RevealCredentialResponse {
                credential,
                version,
                lease,
                revealed: Some(match value {
                    Reveal::Whole(v) => pb::reveal_credential_response::Revealed::Value(v),
                    Reveal::Field(f) => pb::reveal_credential_response::Revealed::Field(f),
                }),
            })
        })
    }

    async fn resolve_credential(
        &self,
        request: Request<pb::ResolveCredentialRequest>,
    ) -> Result<Response<pb::ResolveCredentialResponse>, Status> {
        rpc!(request, |call, req| {
            let service = ServiceLabel::parse(&req.service, "service")?;
            let environment = Environment::parse(&req.environment, "environment")?;
            let name = (!req.name.is_empty())
                .then(|| CredentialName::parse(&req.name, "name"))
                .transpose()?;
            let options =
                reveal_options(req.purpose, req.on_behalf_of, req.field, 0, req.lease_ttl)?;
            let revealed = self
                .0
                .engine
                .resolve(
                    &call.caller,
                    call.ctx(),
                    &service,
                    &environment,
                    name.as_ref(),
                    &options,
                )
                .await?;
            let (credential, version, value, lease) =
                revealed_parts(&revealed, self.credential_out(&call, &revealed.credential));
            Ok(pb::ResolveCredentialResponse {
                credential,
                version,
                lease,
                revealed: Some(match value {
                    Reveal::Whole(v) => pb::resolve_credential_response::Revealed::Value(v),
                    Reveal::Field(f) => pb::resolve_credential_response::Revealed::Field(f),
                }),
            })
        })
    }

    async fn rotate_credential(
        &self,
        request: Request<pb::RotateCredentialRequest>,
    ) -> Result<Response<pb::RotateCredentialResponse>, Status> {
        rpc!(idempotent self, request, |this, call, req| {
            let r = convert::credential_ref(req.credential)?;
            let new_value = match required(req.new_value, "value")? {
                pb::rotate_credential_request::NewValue::Value(v) => {
                    NewValue::Given(convert::value_in(Some(v))?)
                }
                pb::rotate_credential_request::NewValue::Generate(g) => {
                    let (policy, field) = convert::generation_in(g)?;
                    NewValue::Generated { policy, field }
                }
            };
            let c = this
                .0
                .engine
                .rotate(&call.caller, call.ctx(), &r, new_value, &req.reason)
                .await?;
            Ok(pb::RotateCredentialResponse {
                version: c.current_version,
                credential: Some(this.credential_out(&call, &c)),
            })
        })
    }

    async fn list_versions(
        &self,
        request: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        rpc!(request, |call, req| {
            let r = convert::credential_ref(req.credential)?;
            let (_, versions) = self
                .0
                .engine
                .list_versions(&call.caller, call.ctx(), &r)
                .await?;
            Ok(pb::ListVersionsResponse {
                versions: versions
                    .iter()
                    .map(|(v, state)| pb::CredentialVersion {
                        version: v.version,
                        state: convert::version_state_out(*state) as i32,
                        created_at: Some(convert::time_out(v.created_at)),
                        created_by: v.created_by.to_string(),
                        generated: false,
                        reason: String::new(),
                        destroyed: v.envelope.is_none(),
                        destroyed_at: None,
                    })
                    .collect(),
                next_page_token: String::new(),
            })
        })
    }

    async fn rollback_credential(
        &self,
        request: Request<pb::RollbackCredentialRequest>,
    ) -> Result<Response<pb::RollbackCredentialResponse>, Status> {
        rpc!(idempotent self, request, |this, call, req| {
            let r = convert::credential_ref(req.credential)?;
            let c = this
                .0
                .engine
                .rollback(&call.caller, call.ctx(), &r, req.version)
                .await?;
            Ok(pb::RollbackCredentialResponse {
                credential: Some(this.credential_out(&call, &c)),
            })
        })
    }

    async fn revoke_credential(
        &self,
        request: Request<pb::RevokeCredentialRequest>,
    ) -> Result<Response<pb::RevokeCredentialResponse>, Status> {
        rpc!(request, |call, req| {
            let r = convert::credential_ref(req.credential)?;
            let (c, leases_ended) = self
                .0
                .engine
                .revoke(&call.caller, call.ctx(), &r, &req.reason)
                .await?;
            Ok(pb::RevokeCredentialResponse {
                credential: Some(self.credential_out(&call, &c)),
                leases_ended,
            })
        })
    }

    async fn destroy_credential(
        &self,
        request: Request<pb::DestroyCredentialRequest>,
    ) -> Result<Response<pb::DestroyCredentialResponse>, Status> {
        rpc!(request, |call, req| {
            if !req.versions.is_empty() {
                return Err(Error::invalid(
                    "versions",
                    "destroying single versions is not supported yet; leave empty to destroy all",
                ));
            }
            let r = convert::credential_ref(req.credential)?;
            let before = self
                .0
                .engine
                .list_versions(&call.caller, call.ctx(), &r)
                .await?
                .1;
            let c = self
                .0
                .engine
                .destroy(&call.caller, call.ctx(), &r, &req.reason)
                .await?;
            Ok(pb::DestroyCredentialResponse {
                credential: Some(self.credential_out(&call, &c)),
                destroyed_versions: before.iter().map(|(v, _)| v.version).collect(),
            })
        })
    }

    async fn renew_lease(
        &self,
        request: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::RenewLeaseResponse>, Status> {
        rpc!(request, |call, req| {
            let id = LeaseId::parse(&req.lease_id, "lease_id")?;
            let ttl = req
                .ttl
                .as_ref()
                .map(|d| convert::duration_in(d, "ttl"))
                .transpose()?
                .filter(|d| !d.is_zero());
            let lease = self
                .0
                .engine
                .renew_lease(&call.caller, call.ctx(), id, ttl)
                .await?;
            Ok(pb::RenewLeaseResponse {
                lease: Some(lease_out(&lease)),
            })
        })
    }

    async fn release_lease(
        &self,
        request: Request<pb::ReleaseLeaseRequest>,
    ) -> Result<Response<pb::ReleaseLeaseResponse>, Status> {
        rpc!(request, |call, req| {
            let id = LeaseId::parse(&req.lease_id, "lease_id")?;
            let lease = self
                .0
                .engine
                .release_lease(&call.caller, call.ctx(), id)
                .await?;
            Ok(pb::ReleaseLeaseResponse {
                lease: Some(lease_out(&lease)),
            })
        })
    }

    async fn list_leases(
        &self,
        request: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesResponse>, Status> {
        rpc!(request, |call, req| {
            let credential = req
                .credential
                .map(|c| convert::credential_ref(Some(c)))
                .transpose()?;
            let filter = strongroom_core::lease::LeaseFilter {
                principal: (!req.principal_id.is_empty())
                    .then(|| PrincipalId::parse(&req.principal_id, "principal_id"))
                    .transpose()?,
                state: lease_state_in(req.state)?,
                ..Default::default()
            };
            let page = PageRequest::parse(req.page_size, &req.page_token)?;
            let result = self
                .0
                .engine
                .list_leases(&call.caller, call.ctx(), credential.as_ref(), filter, &page)
                .await?;
            Ok(pb::ListLeasesResponse {
                leases: result.items.iter().map(lease_out).collect(),
                next_page_token: result.next_token(),
            })
        })
    }

    async fn test_credential(
        &self,
        request: Request<pb::TestCredentialRequest>,
    ) -> Result<Response<pb::TestCredentialResponse>, Status> {
        use strongroom_engine::ports::{DatabaseFailure, DatabaseTestOutcome};
        rpc!(request, |call, req| {
            let r = convert::credential_ref(req.credential)?;
            let timeout = req
                .timeout
                .as_ref()
                .map(|d| convert::duration_in(d, "timeout"))
                .transpose()?;
            let tested = self
                .0
                .engine
                .test_credential(&call.caller, call.ctx(), &r, timeout)
                .await?;
            let (ok, message, failure) = match &tested.outcome {
                DatabaseTestOutcome::Connected { server_version } => (
                    true,
                    format!("connected: PostgreSQL {server_version}"),
                    pb::CredentialTestFailure::Unspecified,
                ),
                DatabaseTestOutcome::Failed(why) => (
                    false,
                    why.as_str().to_owned(),
                    match why {
                        DatabaseFailure::Unreachable => pb::CredentialTestFailure::Unreachable,
                        DatabaseFailure::Tls => pb::CredentialTestFailure::Tls,
                        DatabaseFailure::Authentication => {
                            pb::CredentialTestFailure::Authentication
                        }
                        DatabaseFailure::DatabaseMissing => {
                            pb::CredentialTestFailure::DatabaseMissing
                        }
                        DatabaseFailure::RefusedByPolicy => {
                            pb::CredentialTestFailure::RefusedByPolicy
                        }
                        DatabaseFailure::Other => pb::CredentialTestFailure::Other,
                    },
                ),
            };
            Ok(pb::TestCredentialResponse {
                ok,
                message,
                latency: Some(convert::duration_out(tested.latency)),
                version: tested.version,
                failure: failure as i32,
            })
        })
    }

    async fn scan_text(
        &self,
        request: Request<pb::ScanTextRequest>,
    ) -> Result<Response<pb::ScanTextResponse>, Status> {
        rpc!(request, |call, req| {
            let pb::ScanTextRequest {
                text,
                environments,
                redact,
            } = req;
            // Wiped however the call ends, a refused argument included.
            let text = zeroize::Zeroizing::new(text);
            let environments = environments
                .iter()
                .map(|e| Environment::parse(e, "environments"))
                .collect::<Result<Vec<_>, Error>>()?;
            let options = ScanOptions {
                environments,
                redact,
            };
            let report = self
                .0
                .engine
                .scan_text(&call.caller, call.ctx(), text, options)
                .await?;
            Ok(convert::scan_out(report))
        })
    }
}

enum Reveal {
    Whole(pb::CredentialValue),
    Field(pb::RevealedField),
}

type RevealParts = (Option<pb::Credential>, u32, Reveal, Option<pb::Lease>);

fn revealed_parts(r: &Revealed, credential: pb::Credential) -> RevealParts {
    let value = match &r.value {
        RevealedValue::Whole(v) => Reveal::Whole(convert::value_out(v)),
        RevealedValue::Field(name, text) => Reveal::Field(pb::RevealedField {
            field: name.clone(),
            value: text.as_str().to_owned(),
        }),
    };
    (
        Some(credential),
        r.version,
        value,
        Some(lease_out(&r.lease)),
    )
}
