//! The config file: TOML whose keys are the long flag names (`listen`, `max-connections`,
//! `nats-url`...). Top-level keys apply to every process that has the flag; a `[center]`
//! or `[gateway]` table applies to that process only and wins over the top level. A key
//! no process knows is an error, so a typo never goes unnoticed.
//!
//! Precedence: a flag on the command line, then its `MRC_*` variable, then the file,
//! then the default. The file's settings become flags put in front of the real ones, so
//! clap parses and validates them exactly as typed ones (and errors name the flag).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use clap::{ArgAction, Command};

/// The process a configuration is for: names its `[table]` in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    Center,
    Gateway,
}

impl Process {
    pub fn section(self) -> &'static str {
        match self {
            Process::Center => "center",
            Process::Gateway => "gateway",
        }
    }

    /// The flags of this process, as clap knows them.
    pub fn command(self) -> Command {
        use clap::Args as _;
        let command = Command::new(self.section());
        match self {
            Process::Center => super::Center::augment_args(command),
            Process::Gateway => super::Gateway::augment_args(command),
        }
    }
}

const PROCESSES: [Process; 2] = [Process::Center, Process::Gateway];

/// `argv` with the settings of the config file (`--config FILE`, else `MRC_CONFIG`) for
/// `process` put in front of the real flags, and the names of the flags the file set.
/// Without a file, `argv` as it is.
pub fn with_file(
    process: Process,
    argv: Vec<OsString>,
) -> anyhow::Result<(Vec<OsString>, Vec<String>)> {
    let Some(path) = config_path(&argv) else {
        return Ok((argv, Vec::new()));
    };
    let table = read(&path)?;
    let command = process.command();
    let settings = settings(&table, process)?;
    let typed = typed_flags(&argv);
    let mut from_file = Vec::new();
    let mut args = Vec::new();
    for (key, value) in settings {
        let arg = find(&command, &key).expect("settings() keeps known flags only");
        let env_set = arg
            .get_env()
            .is_some_and(|env| std::env::var_os(env).is_some());
        if typed.contains(&key) || env_set {
            continue;
        }
        let flag = format!("--{key}");
        args.extend(
            as_flags(&flag, arg, value).with_context(|| format!("{}: {key}", path.display()))?,
        );
        from_file.push(key);
    }
    let mut full = argv;
    let rest = full.split_off(1.min(full.len()));
    full.extend(args);
    full.extend(rest);
    Ok((full, from_file))
}

/// Reads and parses the file.
pub fn read(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    text.parse::<toml::Table>()
        .with_context(|| format!("parsing the config file {}", path.display()))
}

/// Which processes the file configures: those with a table, or both when it has only
/// top-level keys. Every key is checked against the processes that could read it.
pub fn processes_in(table: &toml::Table) -> anyhow::Result<Vec<Process>> {
    let mut named = Vec::new();
    for process in PROCESSES {
        settings(table, process)?;
        if table.contains_key(process.section()) {
            named.push(process);
        }
    }
    Ok(if named.is_empty() {
        PROCESSES.to_vec()
    } else {
        named
    })
}

/// The file's settings for `process`, top level first, its table's over them; an
/// unknown key (top level: known to no process; in a table: unknown to it) is an error.
fn settings(table: &toml::Table, process: Process) -> anyhow::Result<Vec<(String, toml::Value)>> {
    // Each process's flags, built once: clap builds a command by walking every argument.
    let commands = PROCESSES.map(|p| (p, p.command()));
    let command_of = |p: Process| {
        &commands
            .iter()
            .find(|(q, _)| *q == p)
            .expect("every process")
            .1
    };
    let mine = command_of(process);
    let mut settings: Vec<(String, toml::Value)> = Vec::new();
    let mut put =
        |key: String, value: toml::Value| match settings.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => settings.push((key, value)),
        };
    for (key, value) in table {
        if let Some(section) = PROCESSES.iter().find(|p| p.section() == key) {
            let toml::Value::Table(inner) = value else {
                bail!("[{key}] must be a table");
            };
            for (inner_key, value) in inner {
                let name = inner_key.replace('_', "-");
                if find(command_of(*section), &name).is_none() {
                    bail!("[{key}] {inner_key}: mrc-{key} has no flag --{name}");
                }
                if *section == process {
                    put(name, value.clone());
                }
            }
            continue;
        }
        let name = key.replace('_', "-");
        if !commands.iter().any(|(_, c)| find(c, &name).is_some()) {
            bail!("{key}: no MRC process has a flag --{name}");
        }
        if find(mine, &name).is_some() && !table_sets(table, process, &name) {
            put(name, value.clone());
        }
    }
    Ok(settings)
}

/// Whether `process`'s own table sets `name` (which then wins over the top level).
fn table_sets(table: &toml::Table, process: Process, name: &str) -> bool {
    let Some(toml::Value::Table(inner)) = table.get(process.section()) else {
        return false;
    };
    inner.keys().any(|k| k.replace('_', "-") == name)
}

/// The argument with long name `name` (never `config` itself).
fn find<'a>(command: &'a Command, name: &str) -> Option<&'a clap::Arg> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(name) && name != "config")
}

/// `value` as the flags clap would have been given.
fn as_flags(flag: &str, arg: &clap::Arg, value: toml::Value) -> anyhow::Result<Vec<OsString>> {
    let scalar = |value: &toml::Value| -> anyhow::Result<String> {
        match value {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            other => Err(anyhow!(
                "expected a string, number or boolean, got a {}",
                other.type_str()
            )),
        }
    };
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, toml::Value::Boolean(on)) => {
            Ok(if on { vec![flag.into()] } else { Vec::new() })
        }
        (ArgAction::SetTrue, other) => bail!("expected true or false, got a {}", other.type_str()),
        (_, toml::Value::Array(items)) => items
            .iter()
            .map(|item| Ok(format!("{flag}={}", scalar(item)?).into()))
            .collect(),
        (_, value) => Ok(vec![format!("{flag}={}", scalar(&value)?).into()]),
    }
}

/// `--config FILE` / `--config=FILE` on the command line, else `MRC_CONFIG`.
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut args = argv.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(|p| PathBuf::from(p.as_ref()));
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("MRC_CONFIG").map(PathBuf::from)
}

/// The long flags typed on the command line (`--listen x` and `--listen=x` alike).
fn typed_flags(argv: &[OsString]) -> Vec<String> {
    argv.iter()
        .skip(1)
        .filter_map(|a| a.to_str()?.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .collect()
}

/// Where the configuration comes from, and `--check-config`: the same flags for every
/// process.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Configuration")]
pub struct Source {
    /// TOML config file: keys are the long flag names, top level for every process,
    /// `[center]` / `[gateway]` tables for one. Flags and `MRC_*` variables win over it.
    #[arg(long = "config", env = "MRC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Check the configuration (flags, variables, file), print the effective settings
    /// and exit: 0 when valid, 64 when not.
    #[arg(long = "check-config")]
    pub check_config: bool,
}

/// Parses and validates `process`'s configuration from `argv` (and the file and the
/// environment), then renders every setting with where it came from: what
/// `--check-config` and `mrc check-config` print. Secrets show as `<hidden>`.
pub fn check(process: Process, argv: Vec<OsString>) -> anyhow::Result<String> {
    use clap::FromArgMatches as _;
    let (args, from_file) = with_file(process, argv)?;
    let command = process.command();
    let matches = command.clone().try_get_matches_from(args)?;
    match process {
        Process::Center => super::Center::from_arg_matches(&matches)?
            .validate()
            .map(drop)?,
        Process::Gateway => super::Gateway::from_arg_matches(&matches)?
            .validate()
            .map(drop)?,
    }
    let mut text = format!("[{}]\n", process.section());
    for arg in command.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id()) else {
            continue;
        };
        if matches!(long, "config" | "check-config") {
            continue;
        }
        let (Some(source), Some(raw)) = (
            matches.value_source(id.as_str()),
            matches.get_raw(id.as_str()),
        ) else {
            continue;
        };
        let values: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        let value = if arg.is_hide_env_values_set() {
            "<hidden>".to_string()
        } else {
            values.join(",")
        };
        let source = match source {
            _ if from_file.iter().any(|k| k == long) => "file",
            clap::parser::ValueSource::CommandLine => "flag",
            clap::parser::ValueSource::EnvVariable => "env",
            _ => "default",
        };
        text.push_str(&format!("{long} = {value:?}  # {source}\n"));
    }
    Ok(text)
}

/// `process`'s configuration read again as at start (command line, `MRC_*` variables of
/// the process, the config file as it is now), not validated yet: what SIGHUP applies.
pub fn reread<T: clap::FromArgMatches>(process: Process) -> anyhow::Result<T> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let (args, _) = with_file(process, argv)?;
    let matches = process.command().try_get_matches_from(args)?;
    Ok(T::from_arg_matches(&matches)?)
}
