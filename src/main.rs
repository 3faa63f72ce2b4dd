//! The `hpke-gateway` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

/// mimalloc keeps freed memory for reuse: large bodies cost no fresh page faults per
/// request, and small allocations on the request path are cheaper (see the README's
/// performance section).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = hpke_gateway::cli::Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format {
        hpke_gateway::cli::LogFormat::Text => logs.init(),
        hpke_gateway::cli::LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    hpke_gateway::cli::main(args)
}
