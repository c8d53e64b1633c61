//! The `strongroomd` binary: `serve`, `migrate`, `dev`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strongroomd::app::{App, StartError};
use strongroomd::config::{Config, Database, ProcessEnv, Shared};
use strongroomd::{dev, telemetry};

#[derive(Parser)]
#[command(
    name = "strongroomd",
    version,
    about = "The strongroom credential server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve over mutual TLS with the given configuration.
    Serve {
        /// TOML configuration file; STRONGROOM_* variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Apply database migrations (Postgres: connect with a privileged role).
    /// Needs only the database settings.
    Migrate {
        /// TOML configuration file; STRONGROOM_* variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run a local development server: SQLite, a random root key and a dev CA
    /// under DIR, a `demo` tenant, and grpcurl commands to get started.
    Dev {
        /// Folder for data, keys and certificates (reused if present).
        #[arg(long, default_value = ".strongroom-dev")]
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("strongroomd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strongroomd: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), StartError> {
    match command {
        Command::Serve { config } => {
            let config = Config::load(config.as_deref(), &ProcessEnv)?;
            let telemetry = telemetry::init_with_exporters(
                &config.log_level,
                config.log_format,
                &config.telemetry,
                config.metrics.listen.is_some(),
            )
            .map_err(StartError::Telemetry)?;
            let served = match App::build_with(config, &telemetry).await {
                Ok(app) => app.run_until_stopped().await,
                Err(e) => Err(e),
            };
            telemetry.shutdown().await;
            served
        }
        Command::Migrate { config } => {
            // Only the database (and the identity rules its report checks)
            // matter here: no TLS files or root key are needed.
            let config = Shared::load(config.as_deref(), &ProcessEnv)?;
            telemetry::init(&config.log_level, config.log_format);
            match &config.database {
                Database::Postgres {
                    url, migrate_url, ..
                } => {
                    strongroomd::app::migrate_postgres(migrate_url.as_deref().unwrap_or(url))
                        .await?;
                }
                // Opening the SQLite store (below) applies its migrations.
                Database::Sqlite { .. } => {}
            }
            let derived = strongroomd::app::derived_namespaces_report(
                &config.database,
                &config.identity,
                &config.platform_operators,
            )
            .await?;
            tracing::info!("migrations applied");
            for line in &derived {
                println!("{line}");
            }
            if !derived.is_empty() {
                println!(
                    "{} identity namespace(s) were derived from existing bindings: review them; SetIdentityNamespaces confirms a tenant's",
                    derived.len()
                );
            }
            let disabled = strongroomd::app::disabled_bindings_report(&config.database).await?;
            for line in &disabled {
                println!("{line}");
            }
            if !disabled.is_empty() {
                println!(
                    "{} identity binding(s) are disabled: authentication ignores them; assign the tenant an identity namespace covering each (AdminService.SetIdentityNamespaces) or delete it",
                    disabled.len()
                );
            }
            Ok(())
        }
        Command::Dev { dir, listen } => {
            let setup = dev::prepare(&dir, listen)?;
            telemetry::init(&setup.config.log_level, setup.config.log_format);
            let app = App::build(setup.config).await?;
            let agent = dev::bootstrap(&app).await?;
            println!(
                "{}",
                dev::instructions(&setup.dir, app.local_addr(), &agent)
            );
            app.run_until_stopped().await
        }
    }
}
