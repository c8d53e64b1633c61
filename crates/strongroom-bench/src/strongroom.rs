//! The strongroom side: a real strongroomd (release build) with Postgres or
//! SQLite, a tenant, an agent granted reveal, and N credentials.

use std::sync::Arc;

use strongroom_client::Client;
use strongroom_e2e::{Backend, Options, TenantAdmin, TestServer, api_key, path};
use strongroom_proto::v1 as pb;

use crate::load::{Op, pick};

/// A prepared strongroom server.
pub struct Strongroom {
    /// The server (stopped at the end).
    pub server: TestServer,
    admin: TenantAdmin,
    agents: Vec<Client>,
    admins: Vec<Client>,
    credentials: usize,
}

impl Strongroom {
    /// Starts strongroomd on `backend` and loads `credentials` credentials;
    /// `denied_call_limit` false turns the tenant's denied-call limit off.
    pub async fn start(
        backend: Backend,
        credentials: usize,
        connections: usize,
        denied_call_limit: bool,
    ) -> Result<Self, String> {
        let mut options = Options::new(backend);
        options.log_level = "warn,strongroomd::app=info".into();
        options
            .env
            .push(("STRONGROOM_DATABASE_MAX_CONNECTIONS".into(), "32".into()));
        let server = TestServer::start_with(options).await;
        let admin = server.tenant("bench").await;
        let (agent_id, _) = server.principal(&admin, "agent", pb::Role::Agent).await;
        if !denied_call_limit {
            admin
                .client
                .admin()
                .update_tenant_settings(pb::UpdateTenantSettingsRequest {
                    settings: Some(pb::TenantSettings {
                        denied_call_limit: Some(pb::RateLimit {
                            enabled: false,
                            per_minute: 60,
                            burst: 20,
                        }),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["denied_call_limit".into()],
                    }),
                })
                .await
                .map_err(|e| format!("settings: {e}"))?;
        }
        admin
            .client
            .policy()
            .create_grant(pb::CreateGrantRequest {
                subject: Some(pb::GrantSubject {
                    subject: Some(pb::grant_subject::Subject::PrincipalId(agent_id)),
                }),
                selector: "bench/*".into(),
                environments: vec!["production".into()],
                capabilities: vec![pb::Capability::Reveal as i32],
                reason: "benchmark".into(),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("grant: {e}"))?;
        let mut agents = Vec::new();
        let mut admins = Vec::new();
        for _ in 0..connections.max(1) {
            agents.push(server.client("spiffe://e2e.test/bench/agent").await);
            admins.push(server.client("spiffe://e2e.test/bench/admin").await);
        }
        // Load the credentials with some parallelism.
        let mut tasks = Vec::new();
        for chunk in 0..8 {
            let client = admins[chunk % admins.len()].clone();
            tasks.push(tokio::spawn(async move {
                for i in (chunk..credentials).step_by(8) {
                    client
                        .credentials()
                        .create_credential(pb::CreateCredentialRequest {
                            environment: "production".into(),
                            name: format!("bench/cred-{i}"),
                            service: "bench".into(),
                            value: api_key(&format!("bench-value-{i}-0123456789abcdef")),
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| format!("create: {e}"))?;
                }
                Ok::<(), String>(())
            }));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        if let Some(database) = &server.database {
            crate::analyze(database).await?;
        }
        Ok(Self {
            server,
            admin,
            agents,
            admins,
            credentials,
        })
    }

    /// Reveal of a random credential, as the agent.
    pub fn reveal(&self) -> Op {
        let agents = Arc::new(self.agents.clone());
        let n = self.credentials;
        Arc::new(move |worker, i| {
            let client = agents[worker % agents.len()].clone();
            let name = format!("bench/cred-{}", pick(worker, i, n));
            Box::pin(async move {
                client
                    .credentials()
                    .reveal_credential(pb::RevealCredentialRequest {
                        credential: path("production", &name),
                        purpose: "benchmark".into(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{}: {}", e.code(), e.message()))
            })
        })
    }

    /// Create of a new credential, as the admin.
    pub fn create(&self, run: &str) -> Op {
        let admins = Arc::new(self.admins.clone());
        let run = run.to_owned();
        Arc::new(move |worker, i| {
            let client = admins[worker % admins.len()].clone();
            let name = format!("bench/new/{run}/{worker}-{i}");
            Box::pin(async move {
                client
                    .credentials()
                    .create_credential(pb::CreateCredentialRequest {
                        environment: "production".into(),
                        name,
                        service: "bench".into(),
                        value: api_key("bench-created-value-0123456789abcdef"),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{}: {}", e.code(), e.message()))
            })
        })
    }

    /// Rotation of a random credential with a given value, as the admin.
    pub fn rotate(&self) -> Op {
        let admins = Arc::new(self.admins.clone());
        let n = self.credentials;
        Arc::new(move |worker, i| {
            let client = admins[worker % admins.len()].clone();
            let name = format!("bench/cred-{}", pick(worker, i, n));
            Box::pin(async move {
                client
                    .credentials()
                    .rotate_credential(pb::RotateCredentialRequest {
                        credential: path("production", &name),
                        new_value: Some(pb::rotate_credential_request::NewValue::Value(
                            pb::CredentialValue {
                                value: Some(pb::credential_value::Value::ApiKey(pb::ApiKey {
                                    api_key: format!("bench-rotated-{worker}-{i}"),
                                })),
                            },
                        )),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{}: {}", e.code(), e.message()))
            })
        })
    }

    /// The tenant admin (for post-run checks).
    pub fn admin(&self) -> &Client {
        &self.admin.client
    }
}
