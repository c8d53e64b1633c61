//! PolicyService.

mod convert;

use strongroom_core::Error;
use strongroom_core::ids::{AccessRequestId, GrantId, PrincipalId};
use strongroom_core::names::{CredentialName, Environment};
use strongroom_core::page::PageRequest;
use strongroom_core::policy::{Capabilities, GrantSubject, Selector};
use strongroom_core::store::GrantFilter;
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::policy_service_server::PolicyService;
use tonic::{Request, Response, Status};

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

use super::{Call, Shared, rpc};
use convert::required;
use strongroom_engine::{Narrowing, NewAccessRequest, NewGrant};

/// Serves PolicyService.
#[derive(Clone)]
pub struct PolicyHandler(pub Shared);

fn optional_principal(text: &str, field: &'static str) -> Result<Option<PrincipalId>, Error> {
    (!text.is_empty())
        .then(|| PrincipalId::parse(text, field))
        .transpose()
}

#[tonic::async_trait]
impl PolicyService for PolicyHandler {
    async fn create_grant(
        &self,
        request: Request<pb::CreateGrantRequest>,
    ) -> Result<Response<pb::CreateGrantResponse>, Status> {
        rpc!(idempotent self, request, |this, call, req| {
            let subject = match required(required(req.subject, "subject")?.subject, "subject")? {
                pb::grant_subject::Subject::PrincipalId(id) => {
                    GrantSubject::Principal(PrincipalId::parse(&id, "subject.principal_id")?)
                }
                pb::grant_subject::Subject::Role(r) => {
                    GrantSubject::Role(convert::role_in(r, "subject.role")?)
                }
            };
            let caps = req
                .capabilities
                .iter()
                .map(|c| convert::capability_in(*c, "capabilities"))
                .collect::<Result<Vec<_>, _>>()?;
            if req.reason.len() > 1024 {
                return Err(Error::invalid("reason", "must be at most 1024 characters"));
            }
            let new = NewGrant {
                subject,
                selector: Selector::parse(&req.selector, "selector")?,
                environments: convert::environments_in(&req.environments, "environments")?,
                capabilities: Capabilities::of(&caps),
                destinations: convert::destinations_in(req.destinations)?,
                expires_at: req.expires_at.as_ref().map(convert::time_in),
                reason: req.reason,
            };
            let grant = this
                .0
                .engine
                .create_grant(&call.caller, call.ctx(), new)
                .await?;
            Ok(pb::CreateGrantResponse {
                grant: Some(convert::grant_out(&grant)),
            })
        })
    }

    async fn revoke_grant(
        &self,
        request: Request<pb::RevokeGrantRequest>,
    ) -> Result<Response<pb::RevokeGrantResponse>, Status> {
        rpc!(request, |call, req| {
            let id = GrantId::parse(&req.grant_id, "grant_id")?;
            let (grant, leases_ended) = self
                .0
                .engine
                .revoke_grant(&call.caller, call.ctx(), id, &req.reason)
                .await?;
            Ok(pb::RevokeGrantResponse {
                grant: Some(convert::grant_out(&grant)),
                leases_ended,
            })
        })
    }

    async fn check_access(
        &self,
        request: Request<pb::CheckAccessRequest>,
    ) -> Result<Response<pb::CheckAccessResponse>, Status> {
        rpc!(request, |call, req| {
            let principal = optional_principal(&req.principal_id, "principal_id")?;
            let capability = convert::capability_in(req.capability, "capability")?;
            let environment = Environment::parse(&req.environment, "environment")?;
            let name = CredentialName::parse(&req.credential_name, "credential_name")?;
            let on_behalf_of = (!req.on_behalf_of.is_empty()).then_some(req.on_behalf_of.as_str());
            let (subject, decision) = self
                .0
                .engine
                .check_access(
                    &call.caller,
                    call.ctx(),
                    principal,
                    capability,
                    &environment,
                    &name,
                    on_behalf_of,
                )
                .await?;
            Ok(pb::CheckAccessResponse {
                allowed: decision.allowed,
                reason: convert::reason_out(decision.reason) as i32,
                matching_grant_ids: decision.grant.map(|g| g.to_string()).into_iter().collect(),
                role: convert::role_out(subject.role) as i32,
                explanation: decision.reason.explain().to_owned(),
            })
        })
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        rpc!(request, |call, req| {
            let filter = GrantFilter {
                principal: optional_principal(&req.principal_id, "principal_id")?,
                role: if req.role == 0 {
                    None
                } else {
                    Some(convert::role_in(req.role, "role")?)
                },
                covering: (!req.credential_name.is_empty())
                    .then(|| CredentialName::parse(&req.credential_name, "credential_name"))
                    .transpose()?,
                environment: (!req.environment.is_empty())
                    .then(|| Environment::parse(&req.environment, "environment"))
                    .transpose()?,
                in_environments: None,
            };
            if !req.selector.is_empty() {
                return Err(Error::invalid(
                    "selector",
                    "filtering by selector text is not supported; use credential_name",
                ));
            }
            let page = PageRequest::parse(req.page_size, &req.page_token)?;
            let result = self
                .0
                .engine
                .list_grants(&call.caller, call.ctx(), &filter, &page)
                .await?;
            let now = self.0.engine.now();
            Ok(pb::ListGrantsResponse {
                grants: result
                    .items
                    .iter()
                    .filter(|g| req.include_expired || !g.is_expired(now))
                    .map(convert::grant_out)
                    .collect(),
                next_page_token: result.next_token(),
            })
        })
    }

    async fn list_accessible_credentials(
        &self,
        request: Request<pb::ListAccessibleCredentialsRequest>,
    ) -> Result<Response<pb::ListAccessibleCredentialsResponse>, Status> {
        rpc!(request, |call, req| {
            let principal = optional_principal(&req.principal_id, "principal_id")?;
            let capability = if req.capability == 0 {
                strongroom_core::policy::Capability::List
            } else {
                convert::capability_in(req.capability, "capability")?
            };
            let environment = (!req.environment.is_empty())
                .then(|| Environment::parse(&req.environment, "environment"))
                .transpose()?;
            let page = PageRequest::parse(req.page_size, &req.page_token)?;
            let rotation = call
                .caller
                .tenant()
                .map(|t| t.settings.rotation)
                .unwrap_or_default();
            let now = self.0.engine.now();
            let result = self
                .0
                .engine
                .list_accessible(
                    &call.caller,
                    call.ctx(),
                    principal,
                    capability,
                    environment,
                    &page,
                )
                .await?;
            Ok(pb::ListAccessibleCredentialsResponse {
                credentials: result
                    .items
                    .iter()
                    .map(|(c, d)| pb::AccessibleCredential {
                        credential: Some(crate::grpc::credential::convert::credential_out(
                            c, &rotation, now,
                        )),
                        capabilities: vec![req.capability.max(pb::Capability::List as i32)],
                        grant_ids: d.grant.map(|g| g.to_string()).into_iter().collect(),
                        expires_at: None,
                    })
                    .collect(),
                next_page_token: result.next_token(),
            })
        })
    }

    async fn file_access_request(
        &self,
        request: Request<pb::FileAccessRequestRequest>,
    ) -> Result<Response<pb::FileAccessRequestResponse>, Status> {
        rpc!(idempotent self, request, |this, call, req| {
            let (selector, environments) = match (req.credential, req.selector.is_empty()) {
                (Some(_), false) => {
                    return Err(Error::invalid(
                        "selector",
                        "give either credential or selector, not both",
                    ));
                }
                (Some(path), true) => {
                    if !req.environments.is_empty() {
                        return Err(Error::invalid(
                            "environments",
                            "goes with selector; credential names its environment",
                        ));
                    }
                    (
                        Selector::Exact(CredentialName::parse(&path.name, "credential.name")?),
                        vec![Environment::parse(
                            &path.environment,
                            "credential.environment",
                        )?],
                    )
                }
                (None, false) => (
                    Selector::parse(&req.selector, "selector")?,
                    convert::environments_in(&req.environments, "environments")?,
                ),
                (None, true) => {
                    return Err(Error::invalid(
                        "credential",
                        "is required (or a selector with environments)",
                    ));
                }
            };
            let new = NewAccessRequest {
                selector,
                environments,
                capability: convert::capability_in(req.capability, "capability")?,
                destinations: convert::destinations_in(req.destinations)?,
                purpose: req.purpose,
                on_behalf_of: (!req.on_behalf_of.is_empty()).then_some(req.on_behalf_of),
                duration: req
                    .requested_duration
                    .as_ref()
                    .map(|d| convert::duration_in(d, "requested_duration"))
                    .transpose()?,
            };
            let (filed, new) = this
                .0
                .engine
                .file_access_request(&call.caller, call.ctx(), new)
                .await?;
            Ok(pb::FileAccessRequestResponse {
                access_request: Some(convert::access_request_out(&filed)),
                existing: !new,
            })
        })
    }

    type WatchAccessRequestStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchAccessRequestResponse, Status>> + Send>>;

    async fn watch_access_request(
        &self,
        request: Request<pb::WatchAccessRequestRequest>,
    ) -> Result<Response<Self::WatchAccessRequestStream>, Status> {
        let call = Call::of(&request)?;
        let req = request.into_inner();
        let engine = Arc::clone(&self.0.engine);
        let opened = match AccessRequestId::parse(&req.access_request_id, "access_request_id") {
            Ok(id) => engine
                .get_access_request(&call.caller, id)
                .await
                .map(|r| (id, r)),
            Err(e) => Err(e),
        };
        let (id, first) = call.finish(opened)?.into_inner();
        let (tx, rx) = mpsc::channel(2);
        let mut stopping = self.0.stopping.clone();
        tokio::spawn(async move {
            let out = |r: &strongroom_core::access::AccessRequestRecord| {
                Ok(pb::WatchAccessRequestResponse {
                    access_request: Some(convert::access_request_out(r)),
                })
            };
            if tx.send(out(&first)).await.is_err()
                || first.status != strongroom_core::access::AccessRequestStatus::Pending
            {
                return;
            }
            let shutdown = || {
                Status::unavailable("the server is shutting down; watch again on another server")
            };
            if *stopping.borrow() {
                let _ = tx.send(Err(shutdown())).await;
                return;
            }
            let decided = tokio::select! {
                decided = engine.await_decision(&call.caller, id) => decided,
                _ = stopping.changed() => {
                    let _ = tx.send(Err(shutdown())).await;
                    return;
                }
                () = tx.closed() => return,
            };
            let item = match decided {
                Ok(r) => out(&r),
                Err(e) => Err(super::to_status(e, &call.ctx().request_id)),
            };
            let _ = tx.send(item).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_access_request(
        &self,
        request: Request<pb::GetAccessRequestRequest>,
    ) -> Result<Response<pb::GetAccessRequestResponse>, Status> {
        rpc!(request, |call, req| {
            let id = AccessRequestId::parse(&req.access_request_id, "access_request_id")?;
            let found = self.0.engine.get_access_request(&call.caller, id).await?;
            Ok(pb::GetAccessRequestResponse {
                access_request: Some(convert::access_request_out(&found)),
            })
        })
    }

    async fn approve_access_request(
        &self,
        request: Request<pb::ApproveAccessRequestRequest>,
    ) -> Result<Response<pb::ApproveAccessRequestResponse>, Status> {
        rpc!(idempotent self, request, |this, call, req| {
            let id = AccessRequestId::parse(&req.access_request_id, "access_request_id")?;
            let narrowing = Narrowing {
                duration: req
                    .duration
                    .as_ref()
                    .map(|d| convert::duration_in(d, "duration"))
                    .transpose()?,
                destinations: convert::destinations_in(req.destinations)?,
                environments: convert::environments_in(&req.environments, "environments")?,
                reason: req.reason,
            };
            let (decided, grant) = this
                .0
                .engine
                .approve_access_request(&call.caller, call.ctx(), id, narrowing)
                .await?;
            Ok(pb::ApproveAccessRequestResponse {
                access_request: Some(convert::access_request_out(&decided)),
                grant: Some(convert::grant_out(&grant)),
            })
        })
    }

    async fn deny_access_request(
        &self,
        request: Request<pb::DenyAccessRequestRequest>,
    ) -> Result<Response<pb::DenyAccessRequestResponse>, Status> {
        rpc!(request, |call, req| {
            let id = AccessRequestId::parse(&req.access_request_id, "access_request_id")?;
            let decided = self
                .0
                .engine
                .deny_access_request(&call.caller, call.ctx(), id, req.reason)
                .await?;
            Ok(pb::DenyAccessRequestResponse {
                access_request: Some(convert::access_request_out(&decided)),
            })
        })
    }

    async fn list_access_requests(
        &self,
        request: Request<pb::ListAccessRequestsRequest>,
    ) -> Result<Response<pb::ListAccessRequestsResponse>, Status> {
        rpc!(request, |call, req| {
            let requester = optional_principal(&req.requester_id, "requester_id")?;
            let status = convert::request_status_in(req.status, "status")?;
            let page = PageRequest::parse(req.page_size, &req.page_token)?;
            let listed = self
                .0
                .engine
                .list_access_requests(&call.caller, call.ctx(), requester, status, &page)
                .await?;
            Ok(pb::ListAccessRequestsResponse {
                access_requests: listed
                    .items
                    .iter()
                    .map(convert::access_request_out)
                    .collect(),
                next_page_token: listed.next_token(),
            })
        })
    }

    async fn list_notification_deliveries(
        &self,
        request: Request<pb::ListNotificationDeliveriesRequest>,
    ) -> Result<Response<pb::ListNotificationDeliveriesResponse>, Status> {
        rpc!(request, |call, req| {
            let page = PageRequest::parse(req.page_size, &req.page_token)?;
            let listed = self
                .0
                .engine
                .list_notification_deliveries(&call.caller, call.ctx(), &page)
                .await?;
            Ok(pb::ListNotificationDeliveriesResponse {
                deliveries: listed.items.iter().map(convert::delivery_out).collect(),
                next_page_token: listed.next_token(),
            })
        })
    }
}
