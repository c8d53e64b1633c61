//! ExportTenant and ImportTenant: the streams around the engine's export
//! and import (`strongroom_engine::export`).
//!
//! Export runs in a task of its own that feeds a bounded channel: progress
//! messages while the file is built, then its bytes in chunks of at most
//! 1 MiB (with a progress message after each), then the summary. Import
//! reads the header, then buffers every chunk (bounded by
//! [`MAX_IMPORT_BYTES`]) before the engine opens anything: the file is
//! authenticated as a whole before a row is written. Import progress is
//! logged (a client-streaming call has no stream to report on). Neither
//! the passphrase nor any byte of the file is logged.

use std::sync::Arc;

use secrecy::SecretString;
use strongroom_core::Error;
use strongroom_core::ids::TenantId;
use strongroom_core::names::TenantName;
use strongroom_engine::{Phase, Progress, ProgressSink};
use strongroom_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::grpc::status::to_status;
use crate::grpc::{Call, Shared};

/// The largest export file an import accepts (1 GiB).
pub const MAX_IMPORT_BYTES: usize = 1024 * 1024 * 1024;
/// Bytes of the file per export message.
const SEND_CHUNK: usize = 1024 * 1024;

type Item = Result<pb::ExportTenantResponse, Status>;

fn phase_out(phase: Phase) -> pb::TransferPhase {
    match phase {
        Phase::Reading => pb::TransferPhase::Reading,
        Phase::DerivingKey => pb::TransferPhase::DerivingKey,
        Phase::Values | Phase::Verifying | Phase::Writing => pb::TransferPhase::Values,
    }
}

fn progress_message(phase: pb::TransferPhase, done: u64, total: u64) -> pb::ExportTenantResponse {
    pb::ExportTenantResponse {
        part: Some(pb::export_tenant_response::Part::Progress(
            pb::ExportProgress {
                phase: phase.into(),
                done,
                total,
            },
        )),
    }
}

/// ExportTenant.
pub(crate) async fn export(
    shared: &Shared,
    request: Request<pb::ExportTenantRequest>,
) -> Result<Response<ReceiverStream<Item>>, Status> {
    let call = Call::of(&request)?;
    let req = request.into_inner();
    let tenant = if req.tenant_id.is_empty() {
        None
    } else {
        Some(
            TenantId::parse(&req.tenant_id, "tenant_id")
                .map_err(|e| to_status(e, &call.ctx().request_id))?,
        )
    };
    let passphrase = SecretString::from(req.passphrase);
    let (tx, rx) = mpsc::channel::<Item>(16);
    let engine = Arc::clone(&shared.engine);
    let mut stopping = shared.stopping.clone();
    tokio::spawn(async move {
        let progress_tx = tx.clone();
        // Progress is best effort: a slow reader misses some, never blocks
        // the export.
        let sink: ProgressSink = Arc::new(move |p: Progress| {
            let _ = progress_tx.try_send(Ok(progress_message(phase_out(p.phase), p.done, p.total)));
        });
        let exported = tokio::select! {
            r = engine.export_tenant(&call.caller, call.ctx(), tenant, passphrase, sink) => r,
            _ = stopping.wait_for(|s| *s) => Err(Error::Unavailable("the server is shutting down".into())),
        };
        let file = match exported {
            Ok(file) => file,
            Err(e) => {
                let _ = tx.send(Err(to_status(e, &call.ctx().request_id))).await;
                return;
            }
        };
        let total = file.bytes.len() as u64;
        let mut sent = 0u64;
        for piece in file.bytes.chunks(SEND_CHUNK) {
            let chunk = pb::ExportTenantResponse {
                part: Some(pb::export_tenant_response::Part::Chunk(piece.to_vec())),
            };
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            sent += piece.len() as u64;
            if tx
                .send(Ok(progress_message(
                    pb::TransferPhase::Sending,
                    sent,
                    total,
                )))
                .await
                .is_err()
            {
                return;
            }
        }
        let counts = file.counts;
        let summary = pb::ExportSummary {
            counts: Some(counts_out(counts)),
            size_bytes: total,
            sha256: strongroom_crypto::export_digest(&file.bytes).to_vec(),
            format: u32::from(strongroom_crypto::EXPORT_FORMAT),
        };
        let _ = tx
            .send(Ok(pb::ExportTenantResponse {
                part: Some(pb::export_tenant_response::Part::Summary(summary)),
            }))
            .await;
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

fn counts_out(c: strongroom_engine::DataCounts) -> pb::TenantDataCounts {
    pb::TenantDataCounts {
        credentials: c.credentials,
        versions: c.versions,
        principals: c.principals,
        grants: c.grants,
        audit_events: c.audit_events,
    }
}

/// ImportTenant.
pub(crate) async fn import(
    shared: &Shared,
    request: Request<Streaming<pb::ImportTenantRequest>>,
) -> Result<Response<pb::ImportTenantResponse>, Status> {
    let call = Call::of(&request)?;
    let mut stream = request.into_inner();
    let result = read_and_import(shared, &call, &mut stream).await;
    call.finish(result)
}

async fn read_and_import(
    shared: &Shared,
    call: &Call,
    stream: &mut Streaming<pb::ImportTenantRequest>,
) -> strongroom_core::Result<pb::ImportTenantResponse> {
    use pb::import_tenant_request::Part;
    // The header is read first, so a malformed one is answered like any
    // other request (INVALID_ARGUMENT naming its field); then only platform
    // operators go on, before any byte of the file is read.
    let header = match next(stream).await? {
        Some(Part::Header(h)) => h,
        _ => {
            return Err(Error::invalid(
                "header",
                "the first message must be the header",
            ));
        }
    };
    let name = if header.tenant_name.is_empty() {
        None
    } else {
        Some(TenantName::parse(
            &header.tenant_name,
            "header.tenant_name",
        )?)
    };
    let passphrase = SecretString::from(header.passphrase);
    call.caller.platform_scope()?;
    let mut file = Vec::new();
    while let Some(part) = next(stream).await? {
        match part {
            Part::Chunk(bytes) => {
                if file.len() + bytes.len() > MAX_IMPORT_BYTES {
                    return Err(Error::invalid(
                        "chunk",
                        format!("the export is larger than {MAX_IMPORT_BYTES} bytes"),
                    ));
                }
                file.extend_from_slice(&bytes);
            }
            Part::Header(_) => {
                return Err(Error::invalid(
                    "header",
                    "only the first message is a header",
                ));
            }
        }
    }
    let request_id = call.ctx().request_id.clone();
    let sink: ProgressSink = Arc::new(move |p: Progress| {
        tracing::info!(
            request_id = %request_id,
            phase = p.phase.as_str(),
            done = p.done,
            total = p.total,
            "tenant import progress"
        );
    });
    let (tenant, counts) = shared
        .engine
        .import_tenant(&call.caller, call.ctx(), file, passphrase, name, sink)
        .await?;
    Ok(pb::ImportTenantResponse {
        tenant: Some(super::convert::tenant_out(&tenant)),
        counts: Some(counts_out(counts)),
    })
}

/// The next message's part, `None` at the end of the stream.
async fn next(
    stream: &mut Streaming<pb::ImportTenantRequest>,
) -> strongroom_core::Result<Option<pb::import_tenant_request::Part>> {
    loop {
        match stream.message().await {
            Ok(Some(m)) => match m.part {
                Some(p) => return Ok(Some(p)),
                None => continue,
            },
            Ok(None) => return Ok(None),
            // A message refused by its bounds names its field already.
            Err(status) => {
                let (field, message) = match status.message().split_once(": ") {
                    Some((f, m)) if status.code() == tonic::Code::InvalidArgument => {
                        (f.to_owned(), m.to_owned())
                    }
                    _ => (
                        "chunk".to_owned(),
                        format!("the import stream failed: {}", status.message()),
                    ),
                };
                return Err(Error::invalid(field, message));
            }
        }
    }
}
