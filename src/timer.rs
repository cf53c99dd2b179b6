//! Sleeps as short as asked: tokio's timer counts whole milliseconds, so a 1 ms sleep
//! lasts 1–2 ms, and a linger or a reply window of a few hundred microseconds is not
//! possible with it. A [`FineTimer`] is a Linux timerfd that tokio's reactor watches: it
//! wakes within the kernel's timer slack (50 µs by default).

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;

/// One timer for sleeps that follow each other (a batcher's lingers, a pool's windows).
/// Sleeps that overlap take turns; where a timerfd cannot be had, tokio's timer serves.
#[derive(Default)]
pub(crate) struct FineTimer {
    /// Made at the first sleep (registering needs the runtime); `None` until then.
    fd: Mutex<Option<AsyncFd<OwnedFd>>>,
}

impl FineTimer {
    /// Sleeps `duration`. Dropped midway, it leaves the timer armed; the next sleep sets
    /// it again, which also clears an expiry nobody read.
    pub(crate) async fn sleep(&self, duration: Duration) {
        let mut fd = self.fd.lock().await;
        if fd.is_none() {
            match create() {
                Ok(created) => *fd = Some(created),
                Err(e) => tracing::debug!(error = %e, "no timerfd; sleeping with tokio's timer"),
            }
        }
        let Some(timer) = fd.as_ref() else {
            return tokio::time::sleep(duration).await;
        };
        if let Err(e) = arm(timer, duration) {
            tracing::debug!(error = %e, "timerfd not set; sleeping with tokio's timer");
            return tokio::time::sleep(duration).await;
        }
        loop {
            let Ok(mut ready) = timer.readable().await else {
                return tokio::time::sleep(duration).await;
            };
            // A read that would block was a stale readiness: wait again.
            if let Ok(result) = ready.try_io(|timer| expirations(timer.get_ref())) {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "reading the timerfd");
                }
                // Read: unreadable until armed again. Left set, the next sleep's first
                // read would be a syscall that finds nothing.
                ready.clear_ready();
                return;
            }
        }
    }
}

/// A non-blocking timerfd, registered for reads with tokio's reactor.
// `with_interest` is deprecated because a type that merely borrows a descriptor could
// close it while registered; its replacement, `register_with_interest`, is `unsafe`
// (forbidden in this crate) with exactly that condition. An `OwnedFd` owned by the
// `AsyncFd` stays open as long as the registration.
#[allow(deprecated)]
fn create() -> io::Result<AsyncFd<OwnedFd>> {
    let flags = TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC;
    let fd = timerfd_create(TimerfdClockId::Monotonic, flags)?;
    AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)
}

/// Sets the timer to expire once, `duration` from now (a zero duration would disarm
/// it, so it is at least a nanosecond).
fn arm(timer: &AsyncFd<OwnedFd>, duration: Duration) -> io::Result<()> {
    let duration = duration.max(Duration::from_nanos(1));
    let once = Itimerspec {
        it_interval: Timespec::default(),
        it_value: Timespec {
            tv_sec: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: duration.subsec_nanos().into(),
        },
    };
    timerfd_settime(timer.get_ref(), TimerfdTimerFlags::empty(), &once)?;
    Ok(())
}

/// Reads the expiry count, which also makes the timer not readable until it expires again.
fn expirations(timer: &OwnedFd) -> io::Result<u64> {
    let mut count = [0u8; 8];
    rustix::io::read(timer, &mut count)?;
    Ok(u64::from_ne_bytes(count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;
    use std::time::Instant;

    #[tokio::test]
    async fn sleeps_below_a_millisecond_end_on_time() {
        let timer = FineTimer::default();
        for micros in [200, 300, 500] {
            let asked = Duration::from_micros(micros);
            let started = Instant::now();
            timer.sleep(asked).await;
            let slept = started.elapsed();
            assert!(slept >= asked, "{slept:?} < {asked:?}");
        }
    }

    #[tokio::test]
    async fn a_sleep_dropped_midway_does_not_cut_the_next_one_short() {
        let timer = FineTimer::default();
        // Armed for 1 ms and dropped after one poll; the expiry then happens unread.
        let dropped = timer.sleep(Duration::from_millis(1)).now_or_never();
        assert!(dropped.is_none());
        std::thread::sleep(Duration::from_millis(3));
        let started = Instant::now();
        timer.sleep(Duration::from_millis(5)).await;
        assert!(started.elapsed() >= Duration::from_millis(5));
    }

    #[tokio::test]
    async fn overlapping_sleeps_take_turns() {
        let timer = FineTimer::default();
        let started = Instant::now();
        let step = Duration::from_millis(2);
        tokio::join!(timer.sleep(step), timer.sleep(step));
        assert!(started.elapsed() >= 2 * step);
    }
}
