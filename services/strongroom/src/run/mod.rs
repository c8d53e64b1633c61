//! `strongroom run`: starts the command with its credentials bound, waits
//! for it, cleans up, and exits as it did.
//!
//! Order of events: connect; reveal every `--env` credential (their leases
//! are released when the command ends, whatever happens after); for
//! `--inject`, ask the server what may be injected (`DescribeInjection`),
//! make a placeholder per credential, generate the per-run CA and write
//! the CA bundle, start the forwarder; start the command with its
//! environment set, its output through the masker, signals forwarded; when
//! it exits, report the leaks the masker saw, release the leases, remove
//! the bundle.

mod child;
mod output;

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Write as _;
use std::sync::Arc;

use strongroom_client::{Client, Reference};
use strongroom_proto::v1 as pb;
use zeroize::Zeroizing;

use crate::Error;
use crate::cli::{Connection, RunArgs};
use crate::connect::connect;
use crate::forwarder::{self, Forwarder, Injection, Relay, Routes, RunCa, Upstream};

pub(crate) use output::Secret;

/// Variables the child never inherits from `run`'s environment: the proxy
/// settings `run` replaces (a `NO_PROXY` entry would let a request bypass
/// the forwarder and send a placeholder, unreplaced, to its host) and
/// `run`'s own connection settings (the child gets the credentials `run`
/// binds, not the identity that may fetch them).
const CLEARED: &[&str] = &[
    "STRONGROOM_ENDPOINT",
    "STRONGROOM_CERT",
    "STRONGROOM_KEY",
    "STRONGROOM_CA",
    "STRONGROOM_TENANT",
    "STRONGROOM_RUN_UPSTREAM_CA",
    "STRONGROOM_RUN_RESOLVE",
];

/// Set for the child to the forwarder's URL.
const PROXY_VARIABLES: &[&str] = &["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"];
/// Removed from the child's environment when the forwarder runs.
const NO_PROXY_VARIABLES: &[&str] = &["NO_PROXY", "no_proxy"];
/// Set for the child to the CA bundle (system roots + the per-run CA).
const CA_VARIABLES: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
];

/// Runs the command; returns its exit code.
pub(crate) async fn run(connection: &Connection, args: RunArgs) -> Result<i32, Error> {
    let program = args.command.first().cloned().unwrap_or_default();
    let mut seen = HashSet::new();
    for binding in args.inject.iter().chain(&args.env) {
        if !seen.insert(binding.variable.as_str()) {
            return Err(Error::Usage(format!(
                "{} is bound twice (--inject and --env each set one variable)",
                binding.variable
            )));
        }
    }
    let purpose = args.purpose.clone().unwrap_or_else(|| {
        let name = std::path::Path::new(&program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("strongroom run {name}")
    });
    let on_behalf_of = args.on_behalf_of.clone().unwrap_or_default();
    let client = connect(connection).await?;

    let mut leases = Vec::new();
    let result = prepare_and_run(&client, &args, &purpose, &on_behalf_of, &mut leases).await;
    release_leases(&client, &leases).await;
    result
}

async fn prepare_and_run(
    client: &Client,
    args: &RunArgs,
    purpose: &str,
    on_behalf_of: &str,
    leases: &mut Vec<String>,
) -> Result<i32, Error> {
    let mut env: Vec<(String, Zeroizing<String>)> = Vec::new();
    let mut secrets = Vec::new();
    for binding in &args.env {
        let (value, lease) = client
            .reveal_reference_for(&binding.reference, purpose, on_behalf_of)
            .await
            .map_err(|e| reveal_error(&binding.reference, e))?;
        if !lease.lease_id.is_empty() {
            leases.push(lease.lease_id);
        }
        if value.contains('\0') {
            return Err(Error::Usage(format!(
                "{}: the value holds a NUL byte and cannot be an environment variable",
                binding.reference
            )));
        }
        secrets.push(Secret {
            name: binding.variable.clone(),
            credential: injection_ref(&binding.reference),
            value: value.clone(),
        });
        env.push((binding.variable.clone(), value));
    }

    let mut clear: Vec<&str> = CLEARED.to_vec();
    let mut bundle = None;
    let mut forwarder = None;
    if !args.inject.is_empty() {
        let (injections, described) = describe(client, args).await?;
        for (binding, injection) in args.inject.iter().zip(&injections) {
            env.push((
                binding.variable.clone(),
                Zeroizing::new(injection.placeholder.clone()),
            ));
        }
        report_descriptions(args, &described);
        let ca = Arc::new(RunCa::generate().map_err(|e| Error::Forwarder(e.to_string()))?);
        let (system_path, system_pem) = forwarder::system_roots_pem()?;
        let upstream = Upstream::new(
            &system_path,
            &system_pem,
            args.upstream_ca.as_deref(),
            &args.resolve,
        )?;
        let file = write_bundle(&system_pem, ca.cert_pem())?;
        let started = Forwarder::start(forwarder::Settings {
            ca,
            routes: Routes::new(injections),
            upstream,
            relay: Some(Relay {
                client: client.relay(),
                purpose: purpose.to_owned(),
                on_behalf_of: on_behalf_of.to_owned(),
            }),
        })
        .await?;
        for var in PROXY_VARIABLES {
            env.push((
                (*var).to_owned(),
                Zeroizing::new(started.proxy_url().to_owned()),
            ));
        }
        // Node 22.21, 24.5 and later honour the proxy variables only when
        // asked to.
        env.push((
            "NODE_USE_ENV_PROXY".to_owned(),
            Zeroizing::new("1".to_owned()),
        ));
        for var in CA_VARIABLES {
            env.push((
                (*var).to_owned(),
                Zeroizing::new(file.path().to_string_lossy().into_owned()),
            ));
        }
        clear.extend(NO_PROXY_VARIABLES);
        bundle = Some(file);
        forwarder = Some(started);
    }

    let status = child::run_child(
        &args.command,
        &clear,
        &env,
        secrets,
        output::Reporter::new(client.relay(), purpose.to_owned()),
    )
    .await;
    drop(forwarder);
    drop(bundle);
    status
}

fn reveal_error(reference: &Reference, e: strongroom_client::ClientError) -> Error {
    match e {
        strongroom_client::ClientError::Status(status) => {
            Error::call(format!("reveal {reference}"), status)
        }
        other => Error::Client(other),
    }
}

fn injection_ref(reference: &Reference) -> pb::InjectionRef {
    pb::InjectionRef {
        environment: reference.environment.clone(),
        name: reference.name.clone(),
        field: reference.field.clone().unwrap_or_default(),
    }
}

/// Asks what may be injected and makes a placeholder per credential.
async fn describe(
    client: &Client,
    args: &RunArgs,
) -> Result<(Vec<Injection>, Vec<pb::InjectionDescription>), Error> {
    let refs: Vec<pb::InjectionRef> = args
        .inject
        .iter()
        .map(|b| injection_ref(&b.reference))
        .collect();
    let described = client
        .relay()
        .describe_injection(pb::DescribeInjectionRequest {
            credentials: refs.clone(),
        })
        .await
        .map_err(|status| Error::call("describe the injected credentials", status))?
        .into_inner()
        .credentials;
    if described.len() != refs.len() {
        return Err(Error::Forwarder(
            "the server described a different number of credentials than asked".into(),
        ));
    }
    let mut injections = Vec::new();
    for (credential, description) in refs.into_iter().zip(&described) {
        let placeholder = forwarder::new_placeholder()
            .map_err(|_| Error::Forwarder("no randomness for a placeholder".into()))?;
        let template_destinations = if description.allowed && description.has_template {
            description.destinations.clone()
        } else {
            Vec::new()
        };
        injections.push(Injection {
            credential,
            placeholder,
            template_destinations,
        });
    }
    Ok((injections, described))
}

/// Warns about credentials the caller may not inject: their placeholders
/// still stand in the child's environment, and a request carrying one is
/// refused (403) by the relay.
fn report_descriptions(args: &RunArgs, described: &[pb::InjectionDescription]) {
    for (binding, description) in args.inject.iter().zip(described) {
        if !description.allowed {
            let reason = if description.reason.is_empty() {
                "not allowed"
            } else {
                description.reason.as_str()
            };
            eprintln!(
                "strongroom run: warning: {} ({}) cannot be injected: {reason}",
                binding.variable, binding.reference
            );
        }
    }
}

/// Writes the CA bundle the child trusts: the system roots and the per-run
/// CA's certificate (never its key), in a 0600 file removed when dropped.
fn write_bundle(system_pem: &str, ca_pem: &str) -> Result<tempfile::NamedTempFile, Error> {
    let file_error = |path: std::path::PathBuf, error| Error::File { path, error };
    let mut file = tempfile::Builder::new()
        .prefix("strongroom-run-ca-")
        .suffix(".pem")
        .tempfile()
        .map_err(|e| file_error(std::env::temp_dir(), e))?;
    let mut contents = String::with_capacity(system_pem.len() + ca_pem.len() + 2);
    contents.push_str(system_pem);
    if !contents.ends_with('\n') {
        contents.push('\n');
    }
    contents.push_str(ca_pem);
    file.write_all(contents.as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| file_error(file.path().to_path_buf(), e))?;
    Ok(file)
}

/// Releases every lease the reveals returned. A server that does not serve
/// ReleaseLease yet is tolerated with a warning (the leases then end at
/// their expiry).
async fn release_leases(client: &Client, leases: &[String]) {
    let mut credentials = client.credentials();
    for lease_id in leases {
        let released = credentials
            .release_lease(pb::ReleaseLeaseRequest {
                lease_id: lease_id.clone(),
            })
            .await;
        match released {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                eprintln!(
                    "strongroom run: warning: the server does not release leases yet; they end at their expiry"
                );
                return;
            }
            Err(status) => eprintln!(
                "strongroom run: warning: releasing lease {lease_id}: {}: {}",
                status.code(),
                status.message()
            ),
        }
    }
}

/// The program name for messages.
pub(crate) fn program_name(command: &[OsString]) -> String {
    command
        .first()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}
