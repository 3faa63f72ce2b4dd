//! The `hpke-gateway` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc keeps freed memory for reuse: large bodies cost no fresh page faults per
/// request, and small allocations on the request path are cheaper (see the README's
/// performance section).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    allocator_settings();
    let args = hpke_gateway::cli::Args::parse();
    // Held to the end: dropping it writes out every queued log line.
    let _logs = hpke_gateway::logging::init(args.log_format);
    hpke_gateway::cli::main(args)
}

/// How long mimalloc keeps freed pages before it gives them back to the system, in
/// milliseconds. Its default, 10, let freed body buffers pile up: 150 concurrent 10 MiB
/// requests under a 64 MiB buffer budget peaked at 230-300 MiB resident, against about
/// 100 MiB with 1 (docs/security.md). mimalloc reads it from the environment only, before
/// `main`, so the process starts itself again with it set, unless the operator set it.
const PURGE_DELAY_MS: &str = "1";

#[cfg(unix)]
fn allocator_settings() {
    use std::os::unix::process::CommandExt as _;
    const VAR: &str = "MIMALLOC_PURGE_DELAY";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // exec returns only when it failed: then run with mimalloc's defaults.
    let _failed = std::process::Command::new(exe)
        .arg0(arg0)
        .args(args)
        .env(VAR, PURGE_DELAY_MS)
        .exec();
}

#[cfg(not(unix))]
fn allocator_settings() {}
