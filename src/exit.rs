//! How the server binaries end: the exit code for a bad configuration (64, EX_USAGE,
//! before anything started), for success (0) and for a failure (1, logged).

use std::process::ExitCode;

/// Exit code for a configuration error (sysexits EX_USAGE).
pub const CONFIG: u8 = 64;

/// Reports a configuration `error` of `process` on stderr; exit 64.
pub fn bad_config(process: &str, error: &anyhow::Error) -> ExitCode {
    eprintln!("{process}: bad configuration: {error:#}");
    ExitCode::from(CONFIG)
}

/// Exit 0 for a clean stop; logs the failure and exits 1 otherwise.
pub fn finished(process: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "{process} failed");
            ExitCode::FAILURE
        }
    }
}
