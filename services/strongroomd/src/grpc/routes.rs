//! The gRPC services strongroomd serves (the four of the contract, health
//! and reflection) behind the request edge.

use std::sync::Arc;

use strongroom_engine::Engine;
use strongroom_proto::v1::admin_service_server::AdminServiceServer;
use strongroom_proto::v1::audit_service_server::AuditServiceServer;
use strongroom_proto::v1::credential_service_server::CredentialServiceServer;
use strongroom_proto::v1::policy_service_server::PolicyServiceServer;
use tonic::service::Routes;

use super::{AdminHandler, AuditHandler, CredentialHandler, Grpc, PolicyHandler, Shared};
use crate::app::StartError;
use crate::config::Limits;
use crate::edge::{self, CallMetrics};
use crate::health::Health;

/// The services behind the edge: what the transport serves each call with.
pub type GrpcEdge = edge::Stack<Grpc, Routes>;

/// Every service, health (as `health` says: see `crate::health`) and
/// reflection, behind the edge.
pub async fn routes(
    engine: Arc<Engine>,
    limits: &Limits,
    metrics: Option<Arc<CallMetrics>>,
    health: &Arc<Health>,
) -> Result<GrpcEdge, StartError> {
    // Messages up to 4x the limit are decoded so the edge can refuse them
    // with INVALID_ARGUMENT naming the limit (its body limit ends them
    // first); larger ones are cut off by the decoder.
    let decode_limit = limits.max_message_bytes.saturating_mul(4);
    let shared = Shared::new(Arc::clone(&engine));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    health.report(reporter).await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(strongroom_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Serve(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(strongroom_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| StartError::Serve(format!("reflection: {e}")))?;

    let mut routes = Routes::builder();
    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            // ScanText takes larger messages (the edge limits every other
            // method of the service to the configured size).
            CredentialServiceServer::new(CredentialHandler(shared.clone()))
                .max_decoding_message_size(decode_limit.max(super::SCAN_TEXT_MAX_MESSAGE_BYTES)),
        )
        .add_service(
            PolicyServiceServer::new(PolicyHandler(shared.clone()))
                .max_decoding_message_size(decode_limit),
        )
        .add_service(
            AuditServiceServer::new(AuditHandler(shared.clone()))
                .max_decoding_message_size(decode_limit),
        )
        .add_service(
            AdminServiceServer::new(AdminHandler(shared)).max_decoding_message_size(decode_limit),
        );
    let settings = edge::Settings {
        request_timeout: limits.request_timeout,
        max_calls_in_flight: limits.max_calls_in_flight,
        max_message_bytes: limits.max_message_bytes,
        health: Some(Arc::clone(health)),
    };
    Ok(edge::stack(
        Grpc,
        settings,
        engine,
        metrics,
        routes.routes().prepare(),
    ))
}
