//! The process's own metrics, read from `/proc/self` at each scrape (Linux; elsewhere there
//! are none): CPU seconds, memory, threads, open files and start time, under the names
//! every Prometheus client library gives them (`process_*`), so the usual dashboards and
//! alerts work unchanged.
//!
//! Rendered as text here rather than through the `metrics` facade, whose counters are
//! integers: CPU seconds would lose their fraction (`metrics-process` truncates them to
//! whole seconds, or types them as a gauge), and a `rate()` over a minute would jump.

use std::fmt::Write as _;
use std::fs;

/// Clock ticks per second of the times in `/proc/<pid>/stat`: the kernel reports them in
/// USER_HZ, which is 100 on every architecture Linux runs on (the Prometheus Go client's
/// `procfs` assumes the same; reading `sysconf(_SC_CLK_TCK)` would need `unsafe` libc).
const USER_HZ: f64 = 100.0;

/// One reading; a value that could not be read is left out of the text.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Sample {
    cpu_seconds: Option<f64>,
    start_time_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    threads: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

impl Sample {
    /// Reads `/proc/self`: a few small files, cheap enough for every scrape.
    pub(crate) fn read() -> Sample {
        let mut sample = Sample::default();
        if let Ok(stat) = fs::read_to_string("/proc/self/stat") {
            let boot = fs::read_to_string("/proc/stat").ok();
            sample.stat(&stat, boot.as_deref().and_then(boot_time));
        }
        if let Ok(status) = fs::read_to_string("/proc/self/status") {
            sample.resident_bytes = kilobytes(&status, "VmRSS:");
        }
        if let Ok(limits) = fs::read_to_string("/proc/self/limits") {
            sample.max_fds = max_open_files(&limits);
        }
        // The directory's own handle is among the entries, as every client library counts.
        sample.open_fds = fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        sample
    }

    /// Fills in what `/proc/self/stat` holds; `boot` is the boot time (s since the epoch).
    fn stat(&mut self, stat: &str, boot: Option<f64>) {
        // The command name (field 2) is in parentheses and may hold spaces and
        // parentheses itself: the fields are counted from the last `)`.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Field N of proc(5) is at index N - 3: the state (field 3) comes first.
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        if let (Some(user), Some(system)) = (field(14), field(15)) {
            self.cpu_seconds = Some((user + system) as f64 / USER_HZ);
        }
        self.threads = field(20);
        if let (Some(start), Some(boot)) = (field(22), boot) {
            self.start_time_seconds = Some(boot + start as f64 / USER_HZ);
        }
        self.virtual_bytes = field(23);
    }

    /// Appends the Prometheus text of every value read.
    pub(crate) fn render(&self, out: &mut String) {
        let as_f64 = |v: Option<u64>| v.map(|v| v as f64);
        let rows = [
            (
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                self.cpu_seconds,
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                self.start_time_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                as_f64(self.resident_bytes),
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                as_f64(self.virtual_bytes),
            ),
            (
                "process_threads",
                "gauge",
                "Number of OS threads in the process.",
                as_f64(self.threads),
            ),
            (
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                as_f64(self.open_fds),
            ),
            (
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                as_f64(self.max_fds),
            ),
        ];
        for (name, kind, help, value) in rows {
            if let Some(value) = value {
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
                );
            }
        }
    }
}

/// `btime` of `/proc/stat`: when the machine booted, in seconds since the epoch.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// A `Key:   123 kB` line of `/proc/self/status`, in bytes.
fn kilobytes(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix(key))?;
    let kb: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// The soft limit on open files in `/proc/self/limits`; `None` when unlimited.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with spaces and a `)` of its own; utime 250, stime 50 ticks,
        // 7 threads, started 1000 ticks after boot, 4096 bytes of virtual memory.
        let stat = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
                    1000 4096 300 18446744073709551615";
        let mut sample = Sample::default();
        sample.stat(stat, Some(1_700_000_000.0));
        assert_eq!(sample.cpu_seconds, Some(3.0));
        assert_eq!(sample.threads, Some(7));
        assert_eq!(sample.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(sample.virtual_bytes, Some(4096));
    }

    #[test]
    fn status_limits_and_boot_time_are_read() {
        let status = "Name:\tmrc\nVmPeak:\t  9000 kB\nVmRSS:\t    1200 kB\nThreads:\t7\n";
        assert_eq!(kilobytes(status, "VmRSS:"), Some(1200 * 1024));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            max_open_files("Max open files  unlimited  unlimited  files"),
            None
        );
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000.0)
        );
    }

    #[test]
    fn this_process_reads_and_renders_in_prometheus_text() {
        let sample = Sample::read();
        if cfg!(target_os = "linux") {
            assert!(sample.resident_bytes.unwrap() > 0);
            assert!(sample.open_fds.unwrap() > 0);
            assert!(sample.start_time_seconds.unwrap() > 1_600_000_000.0);
        }
        let mut text = String::new();
        sample.render(&mut text);
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (name, value) = line.split_once(' ').unwrap();
            assert!(name.starts_with("process_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
