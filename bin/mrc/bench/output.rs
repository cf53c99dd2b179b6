//! Where results go: a table on stdout, progress on stderr, and (with `--json`) one JSON
//! object per line for `scripts/plot.py`. Every JSON line carries `type`, `scenario`,
//! `run` (this run's id) and `label` (free text from `--label`, e.g. "before").

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;

use anyhow::Context as _;

pub struct Output {
    json: Option<BufWriter<File>>,
    pub run: String,
    pub label: String,
}

impl Output {
    /// Appends to `path` (so several scenarios can share one file).
    pub fn new(path: Option<&Path>, run: String, label: String) -> anyhow::Result<Self> {
        let json = match path {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                Some(BufWriter::new(file))
            }
            None => None,
        };
        Ok(Output { json, run, label })
    }

    /// Writes one JSON line of `kind` for `scenario` (no-op without `--json`).
    pub fn record(&mut self, kind: &str, scenario: &str, mut value: serde_json::Value) {
        let Some(json) = self.json.as_mut() else {
            return;
        };
        if let Some(object) = value.as_object_mut() {
            object.insert("type".into(), kind.into());
            object.insert("scenario".into(), scenario.into());
            object.insert("run".into(), self.run.clone().into());
            object.insert("label".into(), self.label.clone().into());
        }
        let written = serde_json::to_writer(&mut *json, &value)
            .map_err(std::io::Error::from)
            .and_then(|()| json.write_all(b"\n"))
            .and_then(|()| json.flush());
        if let Err(e) = written {
            eprintln!("bench: writing the JSON output failed: {e}");
            self.json = None;
        }
    }
}

/// A progress line on stderr.
pub fn progress(line: &str) {
    eprintln!("  .. {line}");
}
