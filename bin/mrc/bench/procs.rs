//! CPU and memory of the processes under test, read from `/proc` (Linux only).
//!
//! CPU% is the change of `utime + stime` (`/proc/<pid>/stat`) over wall time, where
//! 100% is one core; RSS is `VmRSS` from `/proc/<pid>/status`. Clock ticks are taken as
//! 100 per second (`USER_HZ`, fixed at 100 by the kernel ABI on every Linux platform Rust
//! targets).

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Kernel clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`).
const TICKS_PER_SEC: f64 = 100.0;

/// The process names looked for when no pids are given.
pub const DEFAULT_NAMES: [&str; 3] = ["mrc-gateway", "mrc-center", "nats-server"];

/// CPU time used so far (user + system), in clock ticks, from the text of
/// `/proc/<pid>/stat`. The command name may hold spaces and parentheses, so fields are
/// counted after its last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` field (`VmRSS`, `VmHWM`) of `/proc/<pid>/status`.
pub fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Busy clock ticks of the whole machine (all cores) from the text of `/proc/stat`: every
/// column of the `cpu` line except idle and iowait.
pub fn parse_host_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = values.iter().take(8).sum();
    Some(total - values.get(3)? - values.get(4).unwrap_or(&0))
}

/// The soft and hard `Max open files` of `/proc/<pid>/limits` (`None` for unlimited).
pub fn parse_nofile(limits: &str) -> Option<(Option<u64>, Option<u64>)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut values = line["Max open files".len()..].split_whitespace();
    let parse = |v: Option<&str>| -> Option<Option<u64>> {
        match v? {
            "unlimited" => Some(None),
            n => n.parse().ok().map(Some),
        }
    };
    Some((parse(values.next())?, parse(values.next())?))
}

/// The soft open-files limit of a process (`self` for this one).
pub fn open_files_limit(pid: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    parse_nofile(&text)?.0.or(Some(u64::MAX))
}

/// One watched process.
#[derive(Debug, Clone)]
pub struct Proc {
    pub label: String,
    pub pid: u32,
}

/// Parses `label=pid`.
pub fn parse_proc(text: &str) -> anyhow::Result<Proc> {
    let Some((label, pid)) = text.split_once('=') else {
        bail!("{text:?}: expected label=pid, e.g. gw-1=1234");
    };
    let pid = pid
        .trim()
        .parse()
        .with_context(|| format!("{text:?}: the pid is not a number"))?;
    Ok(Proc {
        label: label.trim().to_string(),
        pid,
    })
}

/// Every process whose name (`/proc/<pid>/comm`) is one of `names`, labelled
/// `<name>-<n>`. Processes of other users of the machine match too: prefer passing pids.
pub fn find_by_name(names: &[&str]) -> Vec<Proc> {
    let mut found: Vec<(String, u32)> = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten().take(1_000_000) {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(comm) = fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        let comm = comm.trim();
        if names.contains(&comm) {
            found.push((comm.to_string(), pid));
        }
    }
    found.sort();
    let mut procs = Vec::new();
    for name in names {
        for (n, (_, pid)) in found.iter().filter(|(c, _)| c == name).enumerate() {
            procs.push(Proc {
                label: format!("{name}-{}", n + 1),
                pid: *pid,
            });
        }
    }
    procs
}

/// One reading of every watched process (`None` fields: the process is gone).
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    ticks: Vec<Option<u64>>,
    rss_kb: Vec<Option<u64>>,
    host: Option<u64>,
}

/// CPU and RSS of one process over an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub label: String,
    /// 100 = one core busy for the whole interval.
    pub cpu_pct: Option<f64>,
    /// RSS at the end of the interval.
    pub rss_kb: Option<u64>,
}

/// The processes a run watches; the bench itself is always the last one (`bench`).
#[derive(Debug, Clone)]
pub struct Watched {
    pub procs: Vec<Proc>,
}

impl Watched {
    pub fn new(mut procs: Vec<Proc>) -> Self {
        procs.push(Proc {
            label: "bench".into(),
            pid: std::process::id(),
        });
        Watched { procs }
    }

    pub fn pid_of(&self, label: &str) -> Option<u32> {
        self.procs.iter().find(|p| p.label == label).map(|p| p.pid)
    }

    pub fn sample(&self) -> Sample {
        let read = |pid: u32, file: &str| fs::read_to_string(format!("/proc/{pid}/{file}")).ok();
        Sample {
            at: Instant::now(),
            ticks: self
                .procs
                .iter()
                .map(|p| read(p.pid, "stat").and_then(|s| parse_stat_ticks(&s)))
                .collect(),
            rss_kb: self
                .procs
                .iter()
                .map(|p| read(p.pid, "status").and_then(|s| parse_status_kb(&s, "VmRSS")))
                .collect(),
            host: fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| parse_host_busy(&s)),
        }
    }

    /// Waits until every watched process but the bench used less than `busy_pct` of a
    /// core over one second, for at most `limit`; how long it waited, and whether they
    /// settled. A cluster past saturation works through its backlog for a while after
    /// the load stops: what is measured next would share the machine with it.
    pub async fn settle(&self, busy_pct: f64, limit: Duration) -> (Duration, bool) {
        let start = Instant::now();
        while start.elapsed() < limit {
            let before = self.sample();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let usage = self.usage(&before, &self.sample());
            // In the order of `procs` (the bench last), then the rest of the machine.
            let cluster = &usage[..self.procs.len() - 1];
            if cluster
                .iter()
                .all(|u| u.cpu_pct.is_none_or(|c| c < busy_pct))
            {
                return (start.elapsed(), true);
            }
        }
        (start.elapsed(), false)
    }

    /// Usage of every process between two samples, then `other`: the CPU the rest of the
    /// machine used meanwhile (other people's builds and tests skew a run: check it).
    pub fn usage(&self, before: &Sample, after: &Sample) -> Vec<Usage> {
        let wall = after.at.saturating_duration_since(before.at);
        let mut usage: Vec<Usage> = self
            .procs
            .iter()
            .enumerate()
            .map(|(i, p)| Usage {
                label: p.label.clone(),
                cpu_pct: cpu_pct(before.ticks[i], after.ticks[i], wall),
                rss_kb: after.rss_kb[i],
            })
            .collect();
        let ours: f64 = usage.iter().filter_map(|u| u.cpu_pct).sum();
        let host = cpu_pct(before.host, after.host, wall);
        usage.push(Usage {
            label: "other".into(),
            cpu_pct: host.map(|h| ((h - ours).max(0.0) * 10.0).round() / 10.0),
            rss_kb: None,
        });
        usage
    }
}

/// CPU% from two tick readings `wall` apart.
pub fn cpu_pct(before: Option<u64>, after: Option<u64>, wall: Duration) -> Option<f64> {
    let (before, after) = (before?, after?);
    if wall.is_zero() {
        return None;
    }
    let busy = after.saturating_sub(before) as f64 / TICKS_PER_SEC;
    Some((busy / wall.as_secs_f64() * 1000.0).round() / 10.0)
}

/// `gw-1 85% 31MB  nats 40% 20MB ...`, for progress lines and tables.
pub fn describe(usage: &[Usage]) -> String {
    usage
        .iter()
        .map(|u| {
            let cpu = u.cpu_pct.map_or("-".into(), |c| format!("{c:.0}%"));
            let rss = u
                .rss_kb
                .map_or(String::new(), |kb| format!(" {:.0}MB", kb as f64 / 1024.0));
            format!("{} {cpu}{rss}", u.label)
        })
        .collect::<Vec<_>>()
        .join("  ")
}

pub fn to_json(usage: &[Usage]) -> serde_json::Value {
    usage
        .iter()
        .map(|u| {
            (
                u.label.clone(),
                serde_json::json!({"cpu_pct": u.cpu_pct, "rss_kb": u.rss_kb}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// CPU time per message, in µs, of each watched process over an interval in which
/// `per_sec` messages a second went through (`other` left out: it is not ours), then the
/// sum of all but the bench (`cluster`) and of all (`all`). Empty when nothing went
/// through.
pub fn per_message(usage: &[Usage], per_sec: f64) -> Vec<(String, f64)> {
    if per_sec <= 0.0 || !per_sec.is_finite() {
        return Vec::new();
    }
    // cpu_pct 100 = one core = 1e6 µs of CPU per second.
    let mut each: Vec<(String, f64)> = usage
        .iter()
        .filter(|u| u.label != "other")
        .filter_map(|u| Some((u.label.clone(), u.cpu_pct? * 1e4 / per_sec)))
        .collect();
    let cluster: f64 = each
        .iter()
        .filter(|(l, _)| l != "bench")
        .map(|(_, us)| us)
        .sum();
    let all: f64 = each.iter().map(|(_, us)| us).sum();
    each.push(("cluster".into(), cluster));
    each.push(("all".into(), all));
    each
}

/// `gw-1 40  gw-2 38 ... cluster 108  all 133` (µs per message, whole numbers).
pub fn describe_per_message(per_message: &[(String, f64)]) -> String {
    per_message
        .iter()
        .map(|(label, us)| format!("{label} {us:.0}"))
        .collect::<Vec<_>>()
        .join("  ")
}

pub fn per_message_json(per_message: &[(String, f64)]) -> serde_json::Value {
    per_message
        .iter()
        .map(|(label, us)| (label.clone(), serde_json::json!((us * 10.0).round() / 10.0)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (mrc (gw) 1) S 1 4242 4242 0 -1 4194560 2045 0 0 0 \
                        1500 250 0 0 20 0 9 0 123456 2000000 7000 18446744073709551615";

    #[test]
    fn stat_ticks_skip_odd_command_names() {
        assert_eq!(parse_stat_ticks(STAT), Some(1750));
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_fields_in_kb() {
        let status = "Name:\tmrc-gateway\nVmHWM:\t   40960 kB\nVmRSS:\t   30720 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(30720));
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(40960));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn open_files_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            20000                20000                files     \n";
        assert_eq!(parse_nofile(limits), Some((Some(20000), Some(20000))));
        let open = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_nofile(open), Some((None, None)));
        assert_eq!(parse_nofile("nothing"), None);
        assert!(open_files_limit("self").is_some());
    }

    #[test]
    fn host_busy_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 50 2 25 500 10 0 1 1 0 0\n";
        assert_eq!(parse_host_busy(stat), Some(161));
        assert_eq!(parse_host_busy("intr 1 2"), None);
    }

    #[test]
    fn cpu_percent_is_one_core_per_hundred() {
        let second = Duration::from_secs(1);
        assert_eq!(cpu_pct(Some(100), Some(150), second), Some(50.0));
        assert_eq!(cpu_pct(Some(0), Some(200), second * 2), Some(100.0));
        assert_eq!(cpu_pct(None, Some(1), second), None);
        assert_eq!(cpu_pct(Some(1), Some(2), Duration::ZERO), None);
    }

    #[test]
    fn cpu_per_message_sums_the_cluster_and_all() {
        let usage = |label: &str, cpu| Usage {
            label: label.into(),
            cpu_pct: cpu,
            rss_kb: None,
        };
        let usage = [
            usage("gw-1", Some(20.0)),
            usage("nats", Some(10.0)),
            usage("center-1", None),
            usage("bench", Some(5.0)),
            usage("other", Some(90.0)),
        ];
        // 2,000 messages a second: 20% of a core = 200,000 µs/s = 100 µs per message.
        let per = per_message(&usage, 2000.0);
        let want = [
            ("gw-1", 100.0),
            ("nats", 50.0),
            ("bench", 25.0),
            ("cluster", 150.0),
            ("all", 175.0),
        ];
        let got: Vec<(&str, f64)> = per.iter().map(|(l, us)| (l.as_str(), *us)).collect();
        assert_eq!(got, want);
        assert_eq!(
            describe_per_message(&per[..2]),
            "gw-1 100  nats 50",
            "whole µs"
        );
        assert!(per_message(&usage, 0.0).is_empty());
    }

    #[test]
    fn labels_and_pids() {
        let p = parse_proc("gw-1=4242").unwrap();
        assert_eq!((p.label.as_str(), p.pid), ("gw-1", 4242));
        assert!(parse_proc("gw-1").is_err());
        assert!(parse_proc("gw-1=x").is_err());
        let watched = Watched::new(vec![p]);
        assert_eq!(watched.pid_of("bench"), Some(std::process::id()));
        let before = watched.sample();
        let after = watched.sample();
        let usage = watched.usage(&before, &after);
        assert_eq!(usage.len(), 3);
        assert_eq!(usage[2].label, "other");
        assert!(usage[1].rss_kb.unwrap() > 0, "the bench reads its own RSS");
        assert!(describe(&usage).contains("bench"));
    }

    #[tokio::test]
    async fn settling_waits_for_the_cluster_not_for_the_bench_or_the_machine() {
        let start = |program: &str, args: &[&str]| {
            let child = std::process::Command::new(program)
                .args(args)
                .spawn()
                .unwrap();
            let label = "gw-1".into();
            let watched = Watched::new(vec![Proc {
                label,
                pid: child.id(),
            }]);
            (child, watched)
        };
        let (mut busy, spinning) = start("sh", &["-c", "while :; do :; done"]);
        let (waited, settled) = spinning.settle(20.0, Duration::from_millis(1500)).await;
        assert!(!settled, "a process spinning on a core is busy");
        assert!(waited >= Duration::from_millis(1500));
        // The machine stays busy (the spinning shell is "other" now), the bench itself
        // is never waited for: an idle cluster settles at the first look.
        let (mut sleeping, idle) = start("sleep", &["5"]);
        let (waited, settled) = idle.settle(20.0, Duration::from_secs(5)).await;
        for child in [&mut busy, &mut sleeping] {
            child.kill().unwrap();
            let _ = child.wait();
        }
        assert!(settled, "an idle process settles");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
    }
}
