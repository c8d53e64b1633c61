//! End-to-end tests: every test starts the real `strongroomd` binary over
//! mutual TLS and talks to it through the generated client (or grpcurl).

/// Runs each `async fn scenario(backend: Backend)` of the calling module as
/// two tests, `scenario::postgres` and `scenario::sqlite`, so every property
/// is checked on both backends.
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn postgres() {
                super::$scenario(strongroom_e2e::Backend::Postgres).await;
            }

            #[tokio::test]
            async fn sqlite() {
                super::$scenario(strongroom_e2e::Backend::Sqlite).await;
            }
        }
    )+};
}

mod abuse;
mod access_requests;
mod audit_stream;
mod audit_summary;
mod checkpoint_integrity;
mod checkpoints;
mod clock;
mod connection_uri;
mod credential_emergency_revoke;
mod credential_test;
mod credential_update;
mod dev_mode;
mod emergency_revoke;
mod export_hardening;
mod export_import;
mod field_bounds;
mod grpcurl;
mod health;
mod idempotency;
mod input_validation;
mod isolation_guards;
mod key_rotation;
mod killed;
mod leases;
mod lifecycle;
mod mtls;
mod namespace_review;
mod namespaces;
mod notifier;
mod operations;
mod ops_listener;
mod oracles;
mod policy;
mod principal_update;
mod relay;
mod replicas;
mod revocation;
mod rotation;
mod run;
mod run_inject;
mod scan;
mod secrets_in_logs;
mod shred;
mod smoke;
mod streams_cut_short;
mod telemetry;
mod tenancy;
mod transport_limits;
mod trust_changes;
