//! Start-up: open the store, load and check the root key, bind the listener,
//! and serve the four services plus health and reflection over mutual TLS
//! until SIGTERM or Ctrl-C, then drain in-flight calls.

use std::net::SocketAddr;
use std::sync::Arc;

use strongroom_core::scope::{Authenticator, SystemScope, SystemTask};
use strongroom_core::store::Store;
use strongroom_core::time::{Clock, SystemClock};
use strongroom_store::{FairShare, PgStore, SqliteStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Database};
use crate::health::{Health, Probe};
use crate::tls::{ClientTrust, ServerCert};
use strongroom_engine::Engine;

mod root_keys;
mod tasks;

pub use root_keys::{RootKeys, load_root_key, load_root_keys};
use tasks::{
    flush_failed_authentications, monitor_rotation, report_root_keys, rewrap_data_keys,
    shutdown_signal, sweep_leases,
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// TLS material unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The root key could not be loaded, or does not match the database.
    #[error("root key: {0}")]
    RootKey(String),
    /// The database could not be opened, migrated or checked.
    #[error("database: {0}")]
    Database(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
    /// Serving failed.
    #[error("server: {0}")]
    Serve(String),
    /// The telemetry exporters could not be set up.
    #[error("telemetry: {0}")]
    Telemetry(String),
}

/// A built, bound server, ready to run.
pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    trust: Arc<ClientTrust>,
    server_cert: Arc<ServerCert>,
    tls_paths: crate::config::TlsPaths,
    health: Arc<Health>,
    probe: Option<Probe>,
    engine: Arc<Engine>,
    limits: crate::config::Limits,
    audit: crate::config::AuditConfig,
    checkpoint_file: Option<(std::path::PathBuf, tokio::fs::File)>,
    call_metrics: Option<Arc<crate::edge::CallMetrics>>,
    ops: Option<OpsListener>,
    relay: crate::relay::RelayHandler,
    notifier: crate::notifier::WebhookClient,
    /// The notifier sender's settings.
    notifier_config: crate::config::NotifierConfig,
    /// The meter of the server's instruments, if it has one.
    meter: Option<opentelemetry::metrics::Meter>,
}

/// The bound operations listener and the reader its `/metrics` collects
/// from.
struct OpsListener {
    listener: TcpListener,
    addr: SocketAddr,
    scrape: Option<Arc<opentelemetry_sdk::metrics::ManualReader>>,
}

/// Opens the configured store. SQLite is migrated at start-up; Postgres is
/// migrated only when `database.migrate_url` is set, and the server's own
/// role is checked to be subject to row-level security. Namespaces the
/// namespaces migration derived are then reviewed against `identity` (see
/// [`derived_namespaces_report`]). With a `meter`, the store's audit
/// batches and its pool are measured (see `ops`). With `limits`, Postgres
/// connections run under its statement and lock timeouts and wait for a
/// pooled connection at most `database.unavailable_after_ms`.
pub async fn open_store(
    database: &Database,
    identity: &crate::config::IdentityConfig,
    operators: &[strongroom_core::principal::IdentityPattern],
    meter: Option<&opentelemetry::metrics::Meter>,
    limits: Option<&crate::config::Limits>,
) -> Result<Arc<dyn Store>, StartError> {
    let problem = |n: &strongroom_core::principal::IdentityPattern| {
        strongroom_core::principal::derived_namespace_problem(
            n,
            identity.min_namespace_depth,
            operators,
        )
    };
    match database {
        Database::Sqlite { path } => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StartError::Database(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            let store = SqliteStore::open(path)
                .await
                .map_err(|e| StartError::Database(format!("{} ({})", e, path.display())))?;
            warn_derived(store.review_derived_namespaces(problem).await);
            warn_disabled(store.disabled_bindings(WARN_DISABLED).await);
            if let Some(meter) = meter {
                store.observe_batches(Arc::new(crate::ops::BatchMetrics::new(meter)));
                let pool = store.pool().clone();
                crate::ops::observe_pool(
                    meter,
                    Box::new(move || {
                        (
                            pool.size(),
                            pool.num_idle(),
                            pool.options().get_max_connections(),
                        )
                    }),
                );
            }
            Ok(Arc::new(store))
        }
        Database::Postgres {
            url,
            max_connections,
            migrate_url,
            listen_url,
            tenant_max_connections,
        } => {
            if let Some(migrate_url) = migrate_url {
                migrate_postgres(migrate_url).await?;
            }
            let timeouts = limits.map(|l| strongroom_store::PgTimeouts {
                acquire: l.database_unavailable_after,
                statement: l.statement_timeout,
                lock: l.lock_timeout,
            });
            let mut store = PgStore::connect_bounded(url, *max_connections, timeouts)
                .await
                .map_err(|e| StartError::Database(e.to_string()))?;
            if let Some(listen_url) = listen_url {
                store = store
                    .listen_at(listen_url)
                    .map_err(|e| StartError::Database(e.to_string()))?;
            }
            store
                .check_role()
                .await
                .map_err(|e| StartError::Database(e.to_string()))?;
            warn_derived(store.review_derived_namespaces(problem).await);
            warn_disabled(store.disabled_bindings(WARN_DISABLED).await);
            if let Some(meter) = meter {
                store.observe_batches(Arc::new(crate::ops::BatchMetrics::new(meter)));
                let pool = store.pool().clone();
                crate::ops::observe_pool(
                    meter,
                    Box::new(move || {
                        (
                            pool.size(),
                            pool.num_idle(),
                            pool.options().get_max_connections(),
                        )
                    }),
                );
            }
            let for_calls =
                crate::config::call_connections(*max_connections, listen_url.as_deref());
            Ok(Arc::new(FairShare::new(
                store,
                for_calls,
                *tenant_max_connections,
            )))
        }
    }
}

/// Applies the Postgres migrations with a privileged connection.
pub async fn migrate_postgres(url: &str) -> Result<(), StartError> {
    let store = PgStore::connect(url, 2)
        .await
        .map_err(|e| StartError::Database(e.to_string()))?;
    strongroom_store::PG_MIGRATOR
        .run(store.pool())
        .await
        .map_err(|e| StartError::Database(format!("migration failed: {e}")))?;
    Ok(())
}

/// How many disabled identity bindings start-up names in its log.
const WARN_DISABLED: u32 = 100;

/// Logs, at start-up, the identity bindings authentication ignores (see
/// [`disabled_bindings_report`]), so they are not forgotten.
fn warn_disabled(found: strongroom_core::Result<Vec<strongroom_core::store::DisabledBinding>>) {
    match found {
        Ok(found) => {
            for b in found {
                tracing::warn!(
                    tenant = %b.tenant_name,
                    tenant_id = %b.tenant,
                    binding_id = %b.binding,
                    identity = %b.pattern.to_text(),
                    reason = %b.reason,
                    "identity binding disabled: authentication ignores it"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list disabled identity bindings"),
    }
}

/// Logs, at start-up, the identity namespaces the namespaces migration
/// derived and no platform operator has confirmed yet.
fn warn_derived(found: strongroom_core::Result<Vec<strongroom_store::DerivedNamespace>>) {
    match found {
        Ok(found) => {
            for n in found {
                tracing::warn!(
                    tenant = %n.tenant_name,
                    tenant_id = %n.tenant,
                    namespace = %n.pattern.to_text(),
                    removed = n.removed,
                    "identity namespace derived from bindings by the migration: review it"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot review derived identity namespaces"),
    }
}

/// The first lines `strongroomd migrate` prints: one per identity namespace
/// the namespaces migration derived from a tenant's bindings and no platform
/// operator has confirmed since (`SetIdentityNamespaces` does), naming its
/// tenant, tenant id and pattern. Prefix namespaces are marked for review
/// (in the Kubernetes SPIFFE layout a short prefix covers many workloads);
/// SPIFFE prefix namespaces shallower than `identity.min_namespace_depth`,
/// and namespaces covering a platform operator, are removed first, their
/// bindings disabled (and listed by
/// [`disabled_bindings_report`]).
///
/// This runs after the SQL migrations rather than inside them because the
/// depth is configuration; it is idempotent, and start-up runs it too.
pub async fn derived_namespaces_report(
    database: &Database,
    identity: &crate::config::IdentityConfig,
    operators: &[strongroom_core::principal::IdentityPattern],
) -> Result<Vec<String>, StartError> {
    let depth = identity.min_namespace_depth;
    let problem = |n: &strongroom_core::principal::IdentityPattern| {
        strongroom_core::principal::derived_namespace_problem(n, depth, operators)
    };
    let found = match database {
        Database::Sqlite { path } => {
            SqliteStore::open(path)
                .await
                .map_err(|e| StartError::Database(e.to_string()))?
                .review_derived_namespaces(problem)
                .await
        }
        Database::Postgres {
            url, migrate_url, ..
        } => {
            PgStore::connect(migrate_url.as_deref().unwrap_or(url), 2)
                .await
                .map_err(|e| StartError::Database(e.to_string()))?
                .review_derived_namespaces(problem)
                .await
        }
    }
    .map_err(|e| StartError::Database(e.to_string()))?;
    Ok(found
        .iter()
        .map(|n| {
            let note = if n.removed {
                let why = strongroom_core::principal::derived_namespace_problem(
                    &n.pattern, depth, operators,
                )
                .unwrap_or_default();
                format!(" removed: {why}; its bindings are disabled")
            } else if matches!(
                n.pattern,
                strongroom_core::principal::IdentityPattern::Prefix(_)
            ) {
                " review: a prefix namespace; confirm or narrow it with SetIdentityNamespaces"
                    .to_owned()
            } else {
                String::new()
            };
            format!(
                "derived identity namespace: tenant={} tenant_id={} namespace={}{note}",
                n.tenant_name,
                n.tenant,
                n.pattern.to_text(),
            )
        })
        .collect())
}

/// The report `strongroomd migrate` prints: one line per identity binding
/// that authentication ignores (too broad to be an identity namespace,
/// overlapping another tenant's, or outside its tenant's namespaces),
/// naming its tenant and id, so an operator can assign namespaces or delete
/// the binding.
pub async fn disabled_bindings_report(database: &Database) -> Result<Vec<String>, StartError> {
    const LIMIT: u32 = 10_000;
    let found = match database {
        Database::Sqlite { path } => {
            SqliteStore::open(path)
                .await
                .map_err(|e| StartError::Database(e.to_string()))?
                .disabled_bindings(LIMIT)
                .await
        }
        Database::Postgres {
            url, migrate_url, ..
        } => {
            PgStore::connect(migrate_url.as_deref().unwrap_or(url), 2)
                .await
                .map_err(|e| StartError::Database(e.to_string()))?
                .disabled_bindings(LIMIT)
                .await
        }
    }
    .map_err(|e| StartError::Database(e.to_string()))?;
    Ok(found
        .iter()
        .map(|b| {
            format!(
                "disabled identity binding: tenant={} tenant_id={} binding_id={} identity={} reason={}",
                b.tenant_name,
                b.tenant,
                b.binding,
                b.pattern.to_text(),
                b.reason
            )
        })
        .collect())
}

impl App {
    /// Opens the store, checks the root key, loads TLS material and binds the
    /// listener (port 0 picks a free one; see [`App::local_addr`]), without
    /// metrics.
    pub async fn build(config: Config) -> Result<App, StartError> {
        Self::build_with(config, &crate::telemetry::Telemetry::default()).await
    }

    /// As [`App::build`], measuring the server with `telemetry`'s
    /// instruments when it has them, and binding the operations listener
    /// when `metrics.listen` is set.
    pub async fn build_with(
        config: Config,
        telemetry: &crate::telemetry::Telemetry,
    ) -> Result<App, StartError> {
        let trust = ClientTrust::load(&config.tls)?;
        let server_cert = ServerCert::load(&config.tls, &trust)?;
        let tls = crate::tls::server_config(&server_cert, &trust)?;
        let store = open_store(
            &config.database,
            &config.identity,
            &config.platform_operators,
            telemetry.meter(),
            Some(&config.limits),
        )
        .await?;
        let health = Health::new(config.limits.database_unavailable_after);
        let probe = match &config.database {
            Database::Postgres { url, .. } => Some(Probe::Postgres(Box::new(
                strongroom_store::PgProbe::new(url, config.limits.database_unavailable_after / 2)
                    .map_err(|e| StartError::Database(e.to_string()))?,
            ))),
            Database::Sqlite { .. } => None,
        };
        let keys = load_root_keys(
            &config.root_key,
            config.next_root_key.as_ref(),
            store.as_ref(),
        )
        .await?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|error| StartError::Listen {
                    addr: config.listen,
                    error,
                })?;
        let addr = listener.local_addr().map_err(|error| StartError::Listen {
            addr: config.listen,
            error,
        })?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        #[cfg(feature = "test-clock")]
        let clock = crate::test_clock::from_env().unwrap_or(clock);
        let mut engine = Engine::new(
            store,
            Arc::new(keys.current),
            config.limits.engine(),
            Authenticator::new(config.platform_operators.clone()),
            clock,
        )
        .with_min_namespace_depth(config.identity.min_namespace_depth)
        .with_key_heartbeat(config.key_heartbeat)
        .with_replica_addr(addr.to_string())
        .with_database_probe(Arc::new(
            crate::database_test::DatabaseTester::new(&config.relay).map_err(|e| {
                crate::config::ConfigError {
                    key: "relay".into(),
                    message: e.0,
                }
            })?,
        ));
        if let Some(next) = keys.next {
            engine = engine.with_next_root_key(Arc::new(next), keys.check_is_next);
        }
        if let Some(derived) = keys.derived {
            engine = engine.with_derived_keys(derived);
        }
        let engine = Arc::new(engine);
        if let Some(meter) = telemetry.meter() {
            crate::ops::observe_caches(meter, &engine);
            crate::ops::observe_crls(meter, &trust);
        }
        let ops = match config.metrics.listen {
            Some(addr) => {
                let listener = crate::ops::bind(addr).await?;
                let addr = listener
                    .local_addr()
                    .map_err(|error| StartError::Listen { addr, error })?;
                Some(OpsListener {
                    listener,
                    addr,
                    scrape: telemetry.scrape_reader(),
                })
            }
            None => None,
        };
        let relay =
            crate::relay::RelayHandler::new(Arc::clone(&engine), &config.relay).map_err(|e| {
                crate::config::ConfigError {
                    key: "relay".into(),
                    message: e.0,
                }
            })?;
        let notifier = crate::notifier::WebhookClient::new(&config.relay, &config.notifier)
            .map_err(|e| crate::config::ConfigError {
                key: "relay".into(),
                message: e.0,
            })?;
        // The checkpoint signing key is derived from the root key.
        engine
            .checkpoint_key()
            .await
            .map_err(|e| StartError::RootKey(format!("checkpoint signing key: {e}")))?;
        // The last head signed per chain, from the checkpoint file, so
        // checkpoints only ever extend it.
        if let Some(path) = &config.audit.checkpoint_file {
            crate::checkpoint_task::seed_from_file(
                &engine,
                &SystemScope::for_task(SystemTask::Checkpoints),
                path,
            )
            .await
            .map_err(|message| crate::config::ConfigError {
                key: "audit.checkpoint_file".into(),
                message,
            })?;
        }
        let checkpoint_file = match &config.audit.checkpoint_file {
            Some(path) => Some((
                path.clone(),
                crate::checkpoint_task::open_file(path).await.map_err(|e| {
                    crate::config::ConfigError {
                        key: "audit.checkpoint_file".into(),
                        message: format!("cannot open {} for appending: {e}", path.display()),
                    }
                })?,
            )),
            None => None,
        };
        Ok(App {
            listener,
            addr,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            trust,
            server_cert,
            tls_paths: config.tls,
            health,
            probe,
            engine,
            limits: config.limits,
            audit: config.audit,
            checkpoint_file,
            call_metrics: telemetry.call_metrics(),
            ops,
            relay,
            notifier,
            notifier_config: config.notifier,
            meter: telemetry.meter().cloned(),
        })
    }

    /// Measures every call with `metrics` (when an exporter is
    /// configured; see `telemetry`).
    pub fn with_call_metrics(mut self, metrics: Option<Arc<crate::edge::CallMetrics>>) -> Self {
        self.call_metrics = metrics;
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The operations listener's bound address, when it is configured.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops.as_ref().map(|o| o.addr)
    }

    /// The engine (used by dev mode to bootstrap its tenant).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The authenticator.
    pub fn authenticator(&self) -> &Authenticator {
        self.engine.authenticator()
    }

    /// Serves until SIGTERM or Ctrl-C, then stops accepting and drains the
    /// calls in flight.
    pub async fn run_until_stopped(self) -> Result<(), StartError> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `stop` completes, then drains.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let App {
            listener,
            addr,
            acceptor,
            trust,
            server_cert,
            tls_paths,
            health,
            probe,
            engine,
            limits,
            audit,
            checkpoint_file,
            call_metrics,
            ops,
            relay,
            notifier,
            notifier_config,
            meter,
        } = self;
        let (stopping_tx, stopping_rx) = watch::channel(false);
        let service = crate::grpc::routes(
            Arc::clone(&engine),
            &limits,
            call_metrics,
            &health,
            relay,
            stopping_rx.clone(),
        )
        .await?;
        // Runs until the process has drained: `/livez` answers throughout,
        // `/readyz` turns 503 as draining starts.
        let ops_task = ops.map(|ops| {
            tracing::info!(addr = %ops.addr, "operations listener (/livez, /readyz, /metrics)");
            let server = crate::ops::Ops::new(Arc::clone(&health), ops.scrape);
            tokio::spawn(server.serve(ops.listener))
        });
        let probe = probe.unwrap_or_else(|| Probe::Store(Arc::clone(engine.store())));
        health.spawn_monitor(probe, stopping_rx.clone());
        crate::tls::spawn_reloader(&tls_paths, &server_cert, &trust, stopping_rx.clone());
        tokio::spawn(flush_failed_authentications(
            Arc::clone(&engine),
            stopping_rx.clone(),
        ));
        tokio::spawn(sweep_leases(
            Arc::clone(&engine),
            limits.lease_sweep_interval,
            stopping_rx.clone(),
        ));
        // Reported once before serving, so a rotation sees this replica.
        let keys = SystemScope::for_task(SystemTask::KeyRotation);
        // Fatal: a replica no rotation can see could wrap new KEKs by a
        // root key being retired.
        if let Err(e) = engine.report_root_keys(&keys).await {
            let _ = stopping_tx.send(true);
            return Err(StartError::Database(format!(
                "cannot report this replica's root keys: {e}"
            )));
        }
        tokio::spawn(report_root_keys(Arc::clone(&engine), stopping_rx.clone()));
        tokio::spawn(rewrap_data_keys(Arc::clone(&engine), stopping_rx.clone()));
        tokio::spawn(monitor_rotation(
            Arc::clone(&engine),
            limits.rotation_monitor_interval,
            stopping_rx.clone(),
        ));
        tokio::spawn(crate::notifier::run(
            Arc::clone(&engine),
            notifier,
            notifier_config,
            meter,
            stopping_rx.clone(),
        ));
        tokio::spawn(crate::checkpoint_task::run(
            Arc::clone(&engine),
            SystemScope::for_task(SystemTask::Checkpoints),
            audit,
            checkpoint_file,
            stopping_rx,
        ));
        let transport = crate::serve::Transport::new(&limits);

        tracing::info!(%addr, "serving");
        crate::serve::serve(listener, acceptor, trust, service, transport, async move {
            stop.await;
            tracing::info!("draining: health NOT_SERVING, no new connections");
            // Health first, so clients watching it see NOT_SERVING before
            // their streams end.
            health.drain().await;
            let _ = stopping_tx.send(true);
        })
        .await;
        // Gone: a root-key rotation need not wait for this replica.
        if let Err(e) = engine.forget_replica(&keys).await {
            tracing::warn!(error = %e, "cannot remove this replica's root-key report");
        }
        if let Some(task) = ops_task {
            task.abort();
        }
        tracing::info!("stopped");
        Ok(())
    }
}
