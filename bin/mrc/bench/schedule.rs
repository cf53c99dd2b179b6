//! The open-loop send schedule: which rates to offer, and when each message is due.
//!
//! A step sends exactly `rate × duration` messages, spread evenly over the step by every
//! sender task. Message `j` of a task is due at `j × duration / n`; the schedule never
//! waits for replies, so a slow cluster shows up as latency and loss, not as a lower
//! offered rate (no coordinated omission).

use std::time::Duration;

use anyhow::{bail, Context as _};

/// Parses a rate like `2000`, `2k`, `2.5k` or `1m` (messages per second).
pub fn parse_rate(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (number, factor) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1_000.0),
        Some((i, 'm' | 'M')) => (&text[..i], 1_000_000.0),
        _ => (text, 1.0),
    };
    let value: f64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a rate (e.g. 500, 2k, 1.5k, 1m)"))?;
    let rate = value * factor;
    if !rate.is_finite() || !(1.0..=10_000_000.0).contains(&rate) {
        bail!("rate {text:?} must be between 1 and 10m per second");
    }
    Ok(rate.round() as u64)
}

/// Parses a comma-separated list of rates (`2k,5k,10k`).
pub fn parse_steps(text: &str) -> anyhow::Result<Vec<u64>> {
    let steps = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(parse_rate)
        .collect::<anyhow::Result<Vec<_>>>()?;
    if steps.is_empty() {
        bail!("no rate steps given");
    }
    Ok(steps)
}

/// How many messages a step sends in total.
pub fn step_total(rate: u64, duration: Duration) -> u64 {
    (rate as f64 * duration.as_secs_f64()).round() as u64
}

/// Splits `total` messages over `tasks` senders as evenly as possible.
pub fn split(total: u64, tasks: usize) -> Vec<u64> {
    let tasks = tasks.max(1) as u64;
    (0..tasks)
        .map(|i| total / tasks + u64::from(i < total % tasks))
        .collect()
}

/// One sender task's share of a step: `count` messages evenly over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub count: u64,
    pub duration: Duration,
}

impl Plan {
    /// When message `j` is due, from the start of the step (integer nanoseconds, rounded
    /// up, so `due(offset(j)) > j` always holds).
    pub fn offset(&self, j: u64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let nanos = (self.duration.as_nanos() * u128::from(j)).div_ceil(u128::from(self.count));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How many messages are due `elapsed` after the start (message 0 is due at once).
    pub fn due(&self, elapsed: Duration) -> u64 {
        let total = self.duration.as_nanos();
        if self.count == 0 || total == 0 || elapsed.as_nanos() >= total {
            return self.count;
        }
        let due = elapsed.as_nanos() * u128::from(self.count) / total + 1;
        u64::try_from(due).unwrap_or(u64::MAX).min(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_take_suffixes() {
        assert_eq!(parse_rate("2000").unwrap(), 2000);
        assert_eq!(parse_rate("2k").unwrap(), 2000);
        assert_eq!(parse_rate("2.5K").unwrap(), 2500);
        assert_eq!(parse_rate(" 1m ").unwrap(), 1_000_000);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("").is_err());
        assert_eq!(
            parse_steps("2k,5k,10k,20k,40k,80k").unwrap(),
            [2000, 5000, 10_000, 20_000, 40_000, 80_000]
        );
        assert!(parse_steps(",").is_err());
    }

    #[test]
    fn a_step_sends_exactly_its_total_over_all_tasks() {
        let total = step_total(10_000, Duration::from_secs(10));
        assert_eq!(total, 100_000);
        let parts = split(100_003, 4);
        assert_eq!(parts, [25_001, 25_001, 25_001, 25_000]);
        assert_eq!(parts.iter().sum::<u64>(), 100_003);
        assert_eq!(split(2, 4), [1, 1, 0, 0]);
    }

    #[test]
    fn messages_are_due_evenly_over_the_step() {
        let plan = Plan {
            count: 1000,
            duration: Duration::from_secs(1),
        };
        assert_eq!(plan.due(Duration::ZERO), 1);
        assert_eq!(plan.due(Duration::from_micros(999)), 1);
        assert_eq!(plan.due(Duration::from_millis(1)), 2);
        assert_eq!(plan.due(Duration::from_millis(500)), 501);
        assert_eq!(plan.due(Duration::from_secs(2)), 1000);
        assert_eq!(plan.offset(0), Duration::ZERO);
        assert_eq!(plan.offset(500), Duration::from_millis(500));
        // Every message is due no later than its offset says.
        for (count, secs) in [(1000, 1), (3, 1), (7, 3), (80_000, 10)] {
            let plan = Plan {
                count,
                duration: Duration::from_secs(secs),
            };
            for j in [0, 1, 2, count / 3, count - 1] {
                assert!(plan.due(plan.offset(j)) > j, "message {j} of {count}");
                if j > 0 {
                    assert!(plan.due(plan.offset(j) - Duration::from_nanos(1)) <= j);
                }
            }
        }
        let empty = Plan {
            count: 0,
            duration: Duration::from_secs(1),
        };
        assert_eq!(empty.due(Duration::from_secs(5)), 0);
    }
}
