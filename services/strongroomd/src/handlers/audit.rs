//! AuditService.

use std::pin::Pin;

use strongroom_core::Error;
use strongroom_core::ids::{CredentialId, PrincipalId};
use strongroom_core::page::PageRequest;
use strongroom_core::store::AuditFilter;
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::audit_service_server::AuditService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{Shared, rpc, unimplemented};
use crate::convert;

/// Serves AuditService.
pub struct AuditHandler(pub Shared);

#[tonic::async_trait]
impl AuditService for AuditHandler {
    async fn query_events(
        &self,
        request: Request<pb::QueryEventsRequest>,
    ) -> Result<Response<pb::QueryEventsResponse>, Status> {
        rpc!(self.0, request, "QueryEvents", |call, req| {
            if req.actions.len() > 1 {
                return Err(Error::invalid(
                    "actions",
                    "at most one action per query is supported",
                ));
            }
            let filter = AuditFilter {
                credential: (!req.credential_id.is_empty())
                    .then(|| CredentialId::parse(&req.credential_id, "credential_id"))
                    .transpose()?,
                principal: (!req.principal_id.is_empty())
                    .then(|| PrincipalId::parse(&req.principal_id, "principal_id"))
                    .transpose()?,
                action: match req.actions.first() {
                    Some(a) => convert::action_in(*a)?,
                    None => None,
                },
                outcome: convert::outcome_in(req.outcome)?,
                since: req.start_time.as_ref().map(convert::time_in),
                until: req.end_time.as_ref().map(convert::time_in),
                environments: None,
            };
            let page = PageRequest::parse(req.page_size, &req.page_token)?;
            let result = self
                .0
                .vault
                .query_audit(&call.caller, &call.ctx, &filter, &page)
                .await?;
            Ok(pb::QueryEventsResponse {
                events: result.items.iter().map(convert::event_out).collect(),
                next_page_token: result.next_token(),
            })
        })
    }

    async fn summary(
        &self,
        _request: Request<pb::SummaryRequest>,
    ) -> Result<Response<pb::SummaryResponse>, Status> {
        Err(unimplemented("Summary"))
    }

    async fn verify_chain(
        &self,
        request: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        rpc!(self.0, request, "VerifyChain", |call, req| {
            if req.from_sequence > 1 || req.checkpoint.is_some() {
                return Err(Error::invalid(
                    "from_sequence",
                    "verification always starts at the first event; checkpoints are not supported yet",
                ));
            }
            let report = self.0.vault.verify_chain(&call.caller, &call.ctx).await?;
            Ok(pb::VerifyChainResponse {
                ok: report.broken.is_none(),
                events_checked: report.checked,
                first_broken_sequence: report.broken.as_ref().map_or(0, |b| b.sequence),
                reason: report
                    .broken
                    .as_ref()
                    .map(|b| b.reason.to_owned())
                    .unwrap_or_default(),
                head_sequence: report.checked,
                head_hash: report.head.to_vec(),
            })
        })
    }

    type StreamEventsStream =
        Pin<Box<dyn Stream<Item = Result<pb::StreamEventsResponse, Status>> + Send>>;

    async fn stream_events(
        &self,
        _request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        Err(unimplemented("StreamEvents"))
    }

    async fn export_checkpoint(
        &self,
        _request: Request<pb::ExportCheckpointRequest>,
    ) -> Result<Response<pb::ExportCheckpointResponse>, Status> {
        Err(unimplemented("ExportCheckpoint"))
    }
}
