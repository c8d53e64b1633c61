//! The `strongroom` command-line client: a remote client of strongroomd over
//! mutual TLS. It never links the engine or anything that can hold the root
//! key.
//!
//! `strongroom run` starts a command with credentials available to it
//! without handing it their values (`--inject`: a placeholder in the
//! environment and a local forwarder that sends requests carrying it through
//! the server's relay), or with values it must hold itself (`--env`, masked
//! in its output).

mod cli;
mod connect;
mod error;
mod forwarder;
mod run;

pub use error::Error;

/// Parses the command line, runs the command and returns the process's exit
/// code: for `run`, the child's status (128 + signal when it was killed);
/// 125 when `strongroom` itself fails, 126 when the command cannot be
/// executed, 127 when it is not found; 2 for a usage error.
pub fn main() -> i32 {
    use clap::Parser as _;
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("strongroom: cannot start the runtime: {e}");
            return error::EXIT_FAILURE;
        }
    };
    match runtime.block_on(cli::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strongroom: {e}");
            e.exit_code()
        }
    }
}
