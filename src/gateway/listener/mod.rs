//! The gateway's front doors. Each adapts its transport to `conn::{Reader, Writer}`;
//! the protocol itself lives in `conn` once.

pub mod ws;
