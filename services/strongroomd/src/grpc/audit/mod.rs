//! AuditService.

mod convert;

use std::pin::Pin;

use strongroom_core::Error;
use strongroom_core::ids::{CredentialId, PrincipalId, TenantId};
use strongroom_core::page::PageRequest;
use strongroom_core::store::AuditFilter;
use strongroom_core::time::Timestamp;
use strongroom_crypto::{ChainRef, Checkpoint, SignedCheckpoint};
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::audit_service_server::AuditService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use strongroom_engine::{
    AuditFeed, ChainTarget, DEFAULT_SUMMARY_TOP, DEFAULT_VERIFY_EVENTS, Engine, MAX_SUMMARY_TOP,
    MAX_VERIFY_EVENTS, SummaryQuery, VerifyOptions,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::{Call, Shared, rpc};

/// Events a stream holds ready for a consumer that is slower than the
/// chain; beyond it the stream stops reading the store until the consumer
/// takes more (it never slows the writers).
const STREAM_BUFFER: usize = 64;

/// What a stream yields.
type StreamItem = Result<pb::StreamEventsResponse, Status>;

/// Feeds `feed`'s events to `tx` until the consumer goes away, a stream
/// that does not follow reaches its end, the caller may no longer read,
/// or the server shuts down (UNAVAILABLE).
async fn feed_stream(
    engine: Arc<Engine>,
    call: Call,
    mut feed: AuditFeed,
    json: bool,
    tx: mpsc::Sender<StreamItem>,
    mut stopping: watch::Receiver<bool>,
) {
    let shutdown = || Status::unavailable("the server is shutting down; resume on another server");
    loop {
        if *stopping.borrow() {
            let _ = tx.send(Err(shutdown())).await;
            return;
        }
        let next = tokio::select! {
            next = engine.next_events(&call.caller, &mut feed) => next,
            _ = stopping.changed() => {
                let _ = tx.send(Err(shutdown())).await;
                return;
            }
            () = tx.closed() => return,
        };
        let events = match next {
            Ok(Some(events)) => events,
            Ok(None) => return,
            Err(e) => {
                let _ = tx
                    .send(Err(super::to_status(e, &call.ctx().request_id)))
                    .await;
                return;
            }
        };
        for event in &events {
            let event = convert::event_out(event);
            let json = if json {
                convert::event_json(&event)
            } else {
                String::new()
            };
            let item = Ok(pb::StreamEventsResponse {
                event: Some(event),
                json,
            });
            tokio::select! {
                sent = tx.send(item) => if sent.is_err() { return },
                _ = stopping.changed() => {
                    let _ = tx.send(Err(shutdown())).await;
                    return;
                }
            }
        }
    }
}

/// Serves AuditService.
pub struct AuditHandler(pub Shared);

#[tonic::async_trait]
impl AuditService for AuditHandler {
    async fn query_events(
        &self,
        request: Request<pb::QueryEventsRequest>,
    ) -> Result<Response<pb::QueryEventsResponse>, Status> {
        rpc!(request, |call, req| {
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
                .engine
                .query_audit(&call.caller, call.ctx(), &filter, &page)
                .await?;
            Ok(pb::QueryEventsResponse {
                events: result.items.iter().map(convert::event_out).collect(),
                next_page_token: result.next_token(),
            })
        })
    }

    async fn summary(
        &self,
        request: Request<pb::SummaryRequest>,
    ) -> Result<Response<pb::SummaryResponse>, Status> {
        rpc!(request, |call, req| {
            if req.top_n > MAX_SUMMARY_TOP {
                return Err(Error::invalid("top_n", "must be at most 500"));
            }
            let query = SummaryQuery {
                since: req.start_time.as_ref().map(convert::time_in),
                until: req.end_time.as_ref().map(convert::time_in),
                credential: (!req.credential_id.is_empty())
                    .then(|| CredentialId::parse(&req.credential_id, "credential_id"))
                    .transpose()?,
                principal: (!req.principal_id.is_empty())
                    .then(|| PrincipalId::parse(&req.principal_id, "principal_id"))
                    .transpose()?,
                top: if req.top_n == 0 {
                    DEFAULT_SUMMARY_TOP
                } else {
                    req.top_n
                },
            };
            let summary = self
                .0
                .engine
                .audit_summary(&call.caller, call.ctx(), &query)
                .await?;
            Ok(convert::summary_out(&summary))
        })
    }

    async fn verify_chain(
        &self,
        request: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        rpc!(request, |call, req| {
            let options = VerifyOptions {
                target: if req.platform_chain {
                    ChainTarget::Platform
                } else {
                    ChainTarget::OwnTenant
                },
                from_sequence: req.from_sequence,
                max_events: if req.max_events == 0 {
                    DEFAULT_VERIFY_EVENTS
                } else {
                    req.max_events.min(MAX_VERIFY_EVENTS)
                },
                checkpoint: req.checkpoint.as_ref().map(checkpoint_in).transpose()?,
            };
            let report = self
                .0
                .engine
                .verify_chain(&call.caller, call.ctx(), &options)
                .await?;
            Ok(pb::VerifyChainResponse {
                ok: report.broken.is_none(),
                events_checked: report.checked,
                first_broken_sequence: report.broken.as_ref().map_or(0, |b| b.sequence),
                reason: report
                    .broken
                    .as_ref()
                    .map(|b| b.reason.to_owned())
                    .unwrap_or_default(),
                head_sequence: report.head.sequence,
                head_hash: report.head.hash.to_vec(),
                next_sequence: report.next_sequence.unwrap_or(0),
                checkpoint_matched: report.checkpoint_matched,
            })
        })
    }

    type StreamEventsStream =
        Pin<Box<dyn Stream<Item = Result<pb::StreamEventsResponse, Status>> + Send>>;

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let call = Call::of(&request)?;
        let req = request.into_inner();
        let engine = Arc::clone(&self.0.engine);
        let opened = engine
            .open_feed(&call.caller, call.ctx(), req.from_sequence, req.follow)
            .await;
        let feed = call.finish(opened)?.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(feed_stream(
            engine,
            call,
            feed,
            req.json,
            tx,
            self.0.stopping.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn export_checkpoint(
        &self,
        request: Request<pb::ExportCheckpointRequest>,
    ) -> Result<Response<pb::ExportCheckpointResponse>, Status> {
        rpc!(request, |call, req| {
            let target = match (req.platform_chain, req.tenant_id.is_empty()) {
                (true, true) => ChainTarget::Platform,
                (true, false) => {
                    return Err(Error::invalid(
                        "tenant_id",
                        "must be empty when platform_chain is set",
                    ));
                }
                (false, true) => ChainTarget::OwnTenant,
                (false, false) => {
                    ChainTarget::Tenant(TenantId::parse(&req.tenant_id, "tenant_id")?)
                }
            };
            let signed = self
                .0
                .engine
                .export_checkpoint(&call.caller, call.ctx(), target)
                .await?;
            let keys = self.0.engine.checkpoint_public_keys(&call.caller).await?;
            let public_key = keys
                .into_iter()
                .find(|(id, _)| *id == signed.checkpoint.key_id)
                .map(|(_, k)| k.to_vec())
                .unwrap_or_default();
            Ok(pb::ExportCheckpointResponse {
                checkpoint: Some(checkpoint_out(&signed, public_key)),
            })
        })
    }

    async fn get_checkpoint_public_key(
        &self,
        request: Request<pb::GetCheckpointPublicKeyRequest>,
    ) -> Result<Response<pb::GetCheckpointPublicKeyResponse>, Status> {
        rpc!(request, |call, _req| {
            let keys = self.0.engine.checkpoint_public_keys(&call.caller).await?;
            Ok(pb::GetCheckpointPublicKeyResponse {
                keys: keys
                    .into_iter()
                    .map(|(key_id, public_key)| pb::CheckpointKey {
                        key_id,
                        algorithm: "ed25519".into(),
                        public_key: public_key.to_vec(),
                    })
                    .collect(),
            })
        })
    }

    async fn query_platform_events(
        &self,
        request: Request<pb::QueryPlatformEventsRequest>,
    ) -> Result<Response<pb::QueryPlatformEventsResponse>, Status> {
        rpc!(request, |call, req| {
            if req.page_token.chars().count() > 128 {
                return Err(Error::invalid(
                    "page_token",
                    "is longer than 128 characters",
                ));
            }
            let filter = AuditFilter {
                outcome: convert::outcome_in(req.outcome)?,
                since: req.start_time.as_ref().map(convert::time_in),
                until: req.end_time.as_ref().map(convert::time_in),
                ..AuditFilter::default()
            };
            let page = PageRequest::parse(req.page_size, &req.page_token)?;
            let result = self
                .0
                .engine
                .query_platform_events(&call.caller, &filter, &page)
                .await?;
            Ok(pb::QueryPlatformEventsResponse {
                events: result.items.iter().map(convert::event_out).collect(),
                next_page_token: result.next_token(),
            })
        })
    }
}

/// A signed checkpoint as sent: the canonical fields, the signature and a
/// copy of the public key.
fn checkpoint_out(signed: &SignedCheckpoint, public_key: Vec<u8>) -> pb::Checkpoint {
    let c = &signed.checkpoint;
    pb::Checkpoint {
        tenant_id: match c.chain {
            ChainRef::Tenant(id) => id.to_string(),
            ChainRef::Platform => String::new(),
        },
        sequence: c.sequence,
        hash: c.hash.to_vec(),
        signed_at: Some(convert::time_out(Timestamp::from_micros(
            c.signed_at_micros,
        ))),
        key_id: c.key_id.clone(),
        signature: signed.signature.to_vec(),
        public_key,
        format: u32::from(strongroom_crypto::CHECKPOINT_FORMAT),
    }
}

/// Parses a checkpoint sent back for verification; its signature is checked
/// by the engine.
fn checkpoint_in(c: &pb::Checkpoint) -> strongroom_core::Result<SignedCheckpoint> {
    if c.format != 0 && c.format != u32::from(strongroom_crypto::CHECKPOINT_FORMAT) {
        return Err(Error::invalid("checkpoint.format", "is not a known format"));
    }
    // Not used (the server's own key is), but bounded like every field.
    if c.public_key.len() > strongroom_crypto::PUBLIC_KEY_LEN {
        return Err(Error::invalid(
            "checkpoint.public_key",
            "is longer than 32 bytes",
        ));
    }
    let chain = if c.tenant_id.is_empty() {
        ChainRef::Platform
    } else {
        ChainRef::Tenant(TenantId::parse(&c.tenant_id, "checkpoint.tenant_id")?.as_uuid())
    };
    let hash: [u8; 32] = c
        .hash
        .as_slice()
        .try_into()
        .map_err(|_| Error::invalid("checkpoint.hash", "must be 32 bytes"))?;
    let signature: [u8; strongroom_crypto::SIGNATURE_LEN] = c
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| Error::invalid("checkpoint.signature", "must be 64 bytes"))?;
    if c.key_id.is_empty()
        || c.key_id.chars().count() > 64
        || c.key_id.chars().any(char::is_control)
    {
        return Err(Error::invalid(
            "checkpoint.key_id",
            "must be 1 to 64 characters, without control characters",
        ));
    }
    let signed_at = c
        .signed_at
        .as_ref()
        .ok_or_else(|| Error::invalid("checkpoint.signed_at", "is required"))?;
    Ok(SignedCheckpoint {
        checkpoint: Checkpoint {
            chain,
            sequence: c.sequence,
            hash,
            signed_at_micros: convert::time_in(signed_at).as_micros(),
            key_id: c.key_id.clone(),
        },
        signature,
    })
}
