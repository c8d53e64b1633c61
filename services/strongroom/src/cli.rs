//! The command line: global connection options and the subcommands.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use strongroom_client::Reference;

use crate::Error;

/// strongroom: use credentials without holding them.
#[derive(Debug, Parser)]
#[command(name = "strongroom", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the server: mutual TLS, https only.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// The server, `https://host:port` (plaintext `http://` is refused).
    #[arg(
        long,
        env = "STRONGROOM_ENDPOINT",
        global = true,
        default_value = "https://127.0.0.1:7443",
        value_parser = parse_endpoint
    )]
    pub endpoint: String,
    /// This client's certificate (PEM); its SPIFFE ID or CN is the identity.
    #[arg(long, env = "STRONGROOM_CERT", global = true)]
    pub cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, env = "STRONGROOM_KEY", global = true)]
    pub key: Option<PathBuf>,
    /// The CA the server's certificate chains to (PEM).
    #[arg(long, env = "STRONGROOM_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Tenant name, needed only when the identity is bound in several
    /// tenants.
    #[arg(long, env = "STRONGROOM_TENANT", global = true)]
    pub tenant: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Runs a command with credentials injected by a local forwarder
    /// (`--inject`) or, where a tool cannot use a proxy, revealed into its
    /// environment (`--env`) and masked in its output.
    Run(RunArgs),
}

/// `strongroom run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// NAME=sr://ENV/NAME[#FIELD]: the child's variable NAME holds a
    /// placeholder; requests carrying it (or going to a destination the
    /// credential is injected into by template) go through the server's
    /// relay, which puts the value in. Needs `inject`. Repeatable.
    #[arg(long = "inject", value_name = "NAME=sr://ENV/NAME[#FIELD]", value_parser = parse_binding)]
    pub inject: Vec<Binding>,
    /// NAME=sr://ENV/NAME[#FIELD]: the child's variable NAME holds the value
    /// itself (revealed; needs `reveal`); masked in the child's output.
    /// Repeatable.
    #[arg(long = "env", value_name = "NAME=sr://ENV/NAME[#FIELD]", value_parser = parse_binding)]
    pub env: Vec<Binding>,
    /// Why the command uses the credentials; recorded in audit (required by
    /// the server for agents). Default: `strongroom run PROGRAM`.
    #[arg(long)]
    pub purpose: Option<String>,
    /// End user the command acts for; recorded in audit.
    #[arg(long)]
    pub on_behalf_of: Option<String>,
    /// Extra CA bundle (PEM) the forwarder trusts, beside the system roots,
    /// for requests it passes on itself (not through the relay).
    #[arg(long, env = "STRONGROOM_RUN_UPSTREAM_CA", value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,
    /// HOST:PORT:ADDR: the forwarder connects to ADDR (with PORT) for
    /// HOST:PORT, like curl's `--resolve`; only for requests it passes on
    /// itself. Repeatable, or comma-separated in the variable.
    #[arg(
        long = "resolve",
        env = "STRONGROOM_RUN_RESOLVE",
        value_name = "HOST:PORT:ADDR",
        value_delimiter = ',',
        value_parser = parse_resolve
    )]
    pub resolve: Vec<Resolve>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `NAME=sr://ENV/NAME[#FIELD]`: a variable of the child bound to a
/// credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding {
    /// The child's environment variable.
    pub variable: String,
    /// The credential.
    pub reference: Reference,
}

/// `HOST:PORT:ADDR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolve {
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
}

fn parse_endpoint(text: &str) -> Result<String, String> {
    if text.starts_with("https://") {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?}: only https:// endpoints are supported (strongroom never talks to the server in plaintext)"
        ))
    }
}

fn parse_binding(text: &str) -> Result<Binding, String> {
    let (variable, reference) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=sr://ENV/NAME[#FIELD]"))?;
    let valid_name = !variable.is_empty()
        && !variable.starts_with(|c: char| c.is_ascii_digit())
        && variable
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(format!(
            "{variable:?}: a variable name is letters, digits and `_`, not starting with a digit"
        ));
    }
    let reference = reference.parse::<Reference>().map_err(|e| e.to_string())?;
    Ok(Binding {
        variable: variable.to_owned(),
        reference,
    })
}

fn parse_resolve(text: &str) -> Result<Resolve, String> {
    let bad = || format!("{text:?}: expected HOST:PORT:ADDR");
    let (host, rest) = text.split_once(':').ok_or_else(bad)?;
    let (port, addr) = rest.split_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let ip: std::net::IpAddr = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Resolve {
        host: host.to_ascii_lowercase(),
        port,
        addr: SocketAddr::new(ip, port),
    })
}

/// Runs the parsed command; returns the exit code.
pub(crate) async fn dispatch(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Run(args) => crate::run::run(&cli.connection, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_parse() {
        let b = parse_binding("OPENAI_API_KEY=sr://dev/llm/openai#api_key")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.variable, "OPENAI_API_KEY");
        assert_eq!(b.reference.environment, "dev");
        assert_eq!(b.reference.name, "llm/openai");
        assert_eq!(b.reference.field.as_deref(), Some("api_key"));
        assert!(parse_binding("sr://dev/llm/openai").is_err());
        assert!(parse_binding("1X=sr://dev/a").is_err());
        assert!(parse_binding("A-B=sr://dev/a").is_err());
        assert!(parse_binding("A=https://x/y").is_err());
    }

    #[test]
    fn resolve_parses() {
        let r = parse_resolve("api.example.test:443:127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.host, "api.example.test");
        assert_eq!(
            r.addr,
            "127.0.0.1:443".parse().unwrap_or_else(|e| panic!("{e}"))
        );
        assert!(parse_resolve("api.example.test:443").is_err());
        assert!(parse_resolve("api.example.test:x:127.0.0.1").is_err());
    }

    #[test]
    fn plaintext_endpoints_are_refused() {
        assert!(parse_endpoint("https://127.0.0.1:7443").is_ok());
        let e = parse_endpoint("http://127.0.0.1:7443")
            .err()
            .unwrap_or_default();
        assert!(e.contains("only https://"), "{e}");
    }

    #[test]
    fn the_command_comes_after_a_double_dash() {
        let cli = Cli::try_parse_from([
            "strongroom",
            "--cert",
            "a.pem",
            "run",
            "--inject",
            "K=sr://dev/llm/openai",
            "--",
            "curl",
            "--inject",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let Command::Run(args) = cli.command;
        assert_eq!(args.inject.len(), 1);
        assert_eq!(
            args.command,
            vec![OsString::from("curl"), OsString::from("--inject")]
        );
    }
}
