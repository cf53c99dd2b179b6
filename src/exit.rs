//! How the server binaries end: the exit code for a bad configuration (64, EX_USAGE,
//! found before anything started or, as a [`BadConfig`], on the way), for success (0)
//! and for a failure (1, logged).

use std::process::ExitCode;

use crate::config::Process;

/// Exit code for a configuration error (sysexits EX_USAGE).
pub(crate) const CONFIG: u8 = 64;

/// Reports a configuration `error` of `process` on stderr; exit 64.
pub fn bad_config(process: &str, error: &anyhow::Error) -> ExitCode {
    eprintln!("{process}: bad configuration: {error:#}");
    ExitCode::from(CONFIG)
}

/// The command line of a server binary (with its config file's settings in front, see
/// `config::file`), or the exit code to end with: clap's own usage errors (an unknown
/// flag, a value that does not parse) are configuration errors too, so they exit 64 like
/// every other, not clap's 2; `--help` and `--version` exit 0. With `--check-config`, the
/// effective settings are printed and the process ends here: 0 when valid, else 64.
pub fn parse<T: clap::Parser>(process: Process) -> Result<T, ExitCode> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let name = format!("mrc-{}", process.section());
    if argv.iter().any(|a| a == "--check-config") {
        return Err(match crate::config::file::check(process, argv) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => bad_config(&name, &e),
        });
    }
    let args = match crate::config::file::with_file(process, argv) {
        Ok((args, _)) => args,
        Err(e) => return Err(bad_config(&name, &e)),
    };
    T::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(CONFIG)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// A configuration error found after start-up (e.g. a bucket JetStream can never
/// create as configured): trying again will not help, so the process exits 64.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct BadConfig(pub anyhow::Error);

/// Exit 0 for a clean stop, 64 for a [`BadConfig`]; logs any other failure and exits 1.
pub fn finished(process: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.chain().any(|cause| cause.is::<BadConfig>()) => {
            tracing::error!(error = %format!("{e:#}"), "{process}: bad configuration");
            bad_config(process, &e)
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "{process} failed");
            ExitCode::FAILURE
        }
    }
}
