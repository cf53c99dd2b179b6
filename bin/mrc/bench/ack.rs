//! Acknowledging stored messages as a real client does: one `ack` for the highest `seq`
//! every [`ACK_EVERY`] messages, and one at the end of each burst (when nothing more is
//! waiting to be read), never one per message.
//!
//! Coalescing matters both ways: an ack per message would cost the gateway one JetStream
//! purge per message, while acking only at the end of the window (64 unacknowledged
//! pushes per session, PROTOCOL.md 8.2) would make every window wait for a round trip
//! before the gateway pushes the next.

use super::conn;

/// Messages received between two acks while a burst lasts: a quarter of the gateway's
/// window, so the next pushes are on their way before the window is full.
pub const ACK_EVERY: u64 = 16;

/// One session's acknowledgements.
#[derive(Debug, Default, Clone)]
pub struct Acks {
    /// The highest `seq` received.
    highest: u64,
    /// Received since the last ack was sent.
    pending: u64,
    /// The highest `seq` whose ack the gateway answered.
    answered: u64,
    /// Acks sent, and answers to them (results or errors). The gateway runs each ack in
    /// a task of its own, so answers can come in any order: until every ack is answered,
    /// one that removed messages may still be on its way.
    pub sent: u64,
    answers: u64,
}

impl Acks {
    /// A stored message `seq` arrived; an `ack` frame to send when [`ACK_EVERY`] are
    /// waiting for one.
    pub fn pushed(&mut self, seq: u64) -> Option<String> {
        self.highest = self.highest.max(seq);
        self.pending += 1;
        if self.pending >= ACK_EVERY {
            return self.flush();
        }
        None
    }

    /// The burst ended: an `ack` for whatever is still unacknowledged.
    pub fn flush(&mut self) -> Option<String> {
        if self.pending == 0 {
            return None;
        }
        self.pending = 0;
        self.sent += 1;
        Some(conn::ack_frame(self.highest))
    }

    /// The gateway answered an ack up to `seq`.
    pub fn answered(&mut self, seq: u64) {
        self.answered = self.answered.max(seq);
        self.answers += 1;
    }

    /// The gateway refused an ack (an `error` frame, e.g. `unavailable` when its purge
    /// timed out): answered, and what is not acknowledged yet is acked again at the next
    /// flush, as a client retries.
    pub fn refused(&mut self) {
        self.answers += 1;
        if self.answered < self.highest {
            self.pending = self.pending.max(1);
        }
    }

    /// Everything received is acknowledged, and every ack answered.
    pub fn settled(&self) -> bool {
        self.pending == 0 && self.answered >= self.highest && self.answers >= self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_coalesce_per_sixteen_and_per_burst() {
        let mut acks = Acks::default();
        assert!(acks.settled(), "nothing received, nothing to ack");
        assert_eq!(acks.flush(), None);
        let frames: Vec<String> = (1..=40).filter_map(|seq| acks.pushed(seq * 10)).collect();
        assert_eq!(frames, [conn::ack_frame(160), conn::ack_frame(320)]);
        assert!(!acks.settled());
        assert_eq!(
            acks.flush(),
            Some(conn::ack_frame(400)),
            "the end of the burst"
        );
        assert_eq!(acks.flush(), None);
        assert_eq!(acks.sent, 3);
        acks.answered(400);
        assert!(!acks.settled(), "the answers to two acks are still to come");
        acks.answered(160);
        acks.refused();
        assert!(acks.settled(), "answers in any order");
        acks.pushed(410);
        acks.flush();
        acks.refused();
        assert!(
            !acks.settled(),
            "410 was refused, so it is not acknowledged"
        );
        assert_eq!(acks.flush(), Some(conn::ack_frame(410)), "acked again");
        acks.answered(410);
        assert!(acks.settled());
    }
}
