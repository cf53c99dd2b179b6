//! The limits every door enforces, read once from the configuration: sizes and counts
//! for the operations, rates and timeouts for client connections.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;

use crate::config;

/// Limits every door enforces.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_frame_bytes: usize,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_receivers: usize,
    pub(crate) max_id_bytes: usize,
    pub(crate) rate: Quota,
    /// Rate-limited sends in a row after which the connection is closed as a flood.
    pub(crate) flood_after: u32,
    pub(crate) max_sessions_per_user: usize,
    pub(crate) outbound_queue: usize,
    pub(crate) login_timeout: Duration,
    pub(crate) sends_in_flight: usize,
}

impl Limits {
    pub(crate) fn from_config(l: &config::Limits) -> Self {
        let nonzero = |n: u32| NonZeroU32::new(n).expect("validated to be > 0");
        Limits {
            max_frame_bytes: l.max_frame_bytes,
            max_body_bytes: l.max_body_bytes,
            max_receivers: l.max_receivers,
            max_id_bytes: l.max_id_bytes,
            rate: Quota::per_second(nonzero(l.rate_per_sec)).allow_burst(nonzero(l.rate_burst)),
            flood_after: l.rate_burst,
            max_sessions_per_user: l.max_sessions_per_user,
            outbound_queue: l.outbound_queue,
            login_timeout: Duration::from_millis(l.login_timeout_ms),
            sends_in_flight: l.sends_in_flight,
        }
    }
}
