//! The senders of the stepped load: OS threads that write each message's WebSocket frame
//! straight to its connection's socket when the message is due.
//!
//! Threads, not tokio tasks, because of the clock: tokio's timer counts whole
//! milliseconds, so a task sleeping until a message is due woke up to a millisecond or
//! more late, and since a message carries its *intended* send time (no coordinated
//! omission), that lateness of the bench was counted as MRC's latency (about half a
//! millisecond on every message). A thread sleeping in `nanosleep` wakes within the
//! kernel's timer slack (50 µs by default), which also lets messages due close together
//! leave in one wake-up. Writing to a duplicate of the socket's descriptor (the
//! connection's reader task keeps the WebSocket) leaves out the lock and the task hand-over
//! of a split WebSocket sink: the bench shares the machine with the cluster it measures,
//! so what it saves is CPU the gateways get.

use std::io::{self, Write as _};
use std::net::TcpStream;
use std::os::fd::AsFd as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

use super::conn::{self, Keep, Ws};
use super::receive::{Shared, StepCounters, NOT_SENT};
use super::schedule::Plan;

/// How long one write may block before the connection is given up.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long past its step a sender keeps sending what is still due.
const SEND_SLACK: Duration = Duration::from_secs(2);
/// How long a write that would block waits before it tries again.
const WRITE_RETRY: Duration = Duration::from_micros(200);

/// A connection's sending side: a duplicate of its socket, written to directly. Its
/// WebSocket (reads, pongs, the closing handshake) stays with the connection's reader.
pub struct Peer {
    socket: TcpStream,
    gateway: usize,
    alive: bool,
}

impl Peer {
    /// The sending side of `ws`, a connection to gateway number `gateway`.
    pub fn new(ws: &Ws, gateway: usize) -> io::Result<Self> {
        let socket = TcpStream::from(ws.get_ref().as_fd().try_clone_to_owned()?);
        Ok(Peer {
            socket,
            gateway,
            alive: true,
        })
    }

    /// Writes `frame` whole. The descriptor is non-blocking (tokio owns the socket): a
    /// full send buffer is waited out for at most [`SEND_TIMEOUT`].
    fn write(&self, mut frame: &[u8]) -> io::Result<()> {
        let deadline = Instant::now() + SEND_TIMEOUT;
        while !frame.is_empty() {
            match (&self.socket).write(frame) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => frame = &frame[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    std::thread::sleep(WRITE_RETRY);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Whom a sender's messages go to.
#[derive(Clone)]
pub enum Aim {
    /// `fanout` receivers picked from the users on other gateways than the sender's
    /// (indexed by the sender's gateway), sent as `keep` says.
    Users {
        receivers: Arc<Vec<Vec<String>>>,
        fanout: usize,
        keep: Keep,
        chosen_ids: bool,
    },
    /// A group, its id encoded as a JSON string.
    Group(String),
}

/// One sender thread's connections and state.
pub struct Sender {
    peers: Vec<Peer>,
    aim: Aim,
    payload: usize,
    rng: u64,
    /// The frame being written, reused.
    frame: Vec<u8>,
}

impl Sender {
    /// Sender number `k` (its random sequence differs from every other sender's).
    pub fn new(k: usize, aim: Aim, payload: usize) -> Self {
        Sender {
            peers: Vec::new(),
            aim,
            payload,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (k as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
            frame: Vec::new(),
        }
    }

    pub fn add(&mut self, peer: Peer) {
        self.peers.push(peer);
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: plenty for picking receivers and masks.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick_receivers(
        &mut self,
        receivers: &[Vec<String>],
        fanout: usize,
        gateway: usize,
    ) -> Vec<String> {
        let pool = &receivers[gateway];
        let want = fanout.min(pool.len());
        let mut picked: Vec<usize> = Vec::with_capacity(want);
        for _ in 0..want * 8 {
            if picked.len() == want {
                break;
            }
            let i = (self.random() % pool.len() as u64) as usize;
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        picked.into_iter().map(|i| pool[i].clone()).collect()
    }

    /// Sends one message from a random live connection; false when none is left.
    fn send_one(
        &mut self,
        (t_us, sent_us): (u64, u64),
        step: usize,
        seq: u64,
        counters: &StepCounters,
    ) -> bool {
        let n = self.peers.len();
        let first = if n == 0 {
            0
        } else {
            (self.random() % n as u64) as usize
        };
        let Some(k) = (0..n)
            .map(|d| (first + d) % n)
            .find(|&k| self.peers[k].alive)
        else {
            return false;
        };
        let body = conn::body(t_us, sent_us, step, seq, self.payload);
        let text = match &self.aim {
            Aim::Users {
                receivers,
                fanout,
                keep,
                chosen_ids,
            } => {
                let (receivers, fanout, keep) = (receivers.clone(), *fanout, *keep);
                // The report's id then tells when its message left.
                let id = chosen_ids.then(|| conn::chosen_id(step, seq, sent_us));
                let to = self.pick_receivers(&receivers, fanout, self.peers[k].gateway);
                conn::send_frame(&to, id.as_deref(), keep, &body)
            }
            Aim::Group(group) => conn::group_send_frame(group, &body),
        };
        let mask = (self.random() as u32).to_ne_bytes();
        let mut frame = std::mem::take(&mut self.frame);
        client_text_frame(&text, mask, &mut frame);
        let peer = &mut self.peers[k];
        match peer.write(&frame) {
            Ok(()) => {
                counters.sent.fetch_add(1, Relaxed);
            }
            Err(_) => {
                peer.alive = false;
                counters.send_failed.fetch_add(1, Relaxed);
                if let Some(r) = counters.receipts.get(seq as usize) {
                    r.store(NOT_SENT, Relaxed);
                }
            }
        }
        self.frame = frame;
        true
    }

    /// Sends this sender's share of step `step` on schedule, never waiting for replies
    /// (blocks: run it on a thread of its own). Its messages are numbered from `first`.
    pub(super) fn run_step(
        mut self,
        step: usize,
        plan: Plan,
        first: u64,
        start: Instant,
        shared: Arc<Shared>,
    ) -> Self {
        let counters = &shared.steps[step];
        let epoch = shared.epoch.into_std();
        let hard_end = start + plan.duration + SEND_SLACK;
        sleep_until(start);
        let mut j = 0;
        let mut lag_max = Duration::ZERO;
        'step: while j < plan.count {
            let now = Instant::now();
            if now >= hard_end {
                break;
            }
            let due = plan.due(now - start);
            while j < due {
                let intended = start + plan.offset(j);
                let now = Instant::now();
                lag_max = lag_max.max(now.saturating_duration_since(intended));
                let t_us = (intended - epoch).as_micros() as u64;
                let sent_us = (now - epoch).as_micros() as u64;
                if !self.send_one((t_us, sent_us), step, first + j, counters) {
                    break 'step;
                }
                j += 1;
            }
            if j < plan.count {
                sleep_until(start + plan.offset(j));
            }
        }
        counters.unsent.fetch_add(plan.count - j, Relaxed);
        for seq in first + j..first + plan.count {
            if let Some(r) = counters.receipts.get(seq as usize) {
                r.store(NOT_SENT, Relaxed);
            }
        }
        counters
            .lag_max_us
            .fetch_max(lag_max.as_micros() as u64, Relaxed);
        self
    }
}

fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

/// `text` as one masked client text frame (RFC 6455 §5.3: a client masks every frame).
fn client_text_frame(text: &str, mask: [u8; 4], out: &mut Vec<u8>) {
    out.clear();
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        mask: Some(mask),
        ..FrameHeader::default()
    };
    header
        .format(text.len() as u64, out)
        .expect("writing to a Vec never fails");
    let start = out.len();
    out.extend_from_slice(text.as_bytes());
    for (i, byte) in out[start..].iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn frames_are_masked_text_frames_that_decode_to_the_text() {
        for len in [0, 5, 125, 126, 300, 70_000] {
            let text = "x".repeat(len);
            let mut out = Vec::new();
            client_text_frame(&text, [1, 2, 3, 4], &mut out);
            let mut cursor = Cursor::new(&out);
            let (header, length) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(length, len as u64);
            assert_eq!(header.opcode, OpCode::Data(Data::Text));
            assert!(header.is_final);
            assert_eq!(header.mask, Some([1, 2, 3, 4]));
            let payload = &out[cursor.position() as usize..];
            let unmasked: Vec<u8> = payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4])
                .collect();
            assert_eq!(unmasked, text.as_bytes());
        }
    }
}
