//! The one integration-test binary: every test runs real `mrc-center` / `mrc-gateway`
//! processes against its own real nats-server, with clients on real sockets.

mod auth;
mod bad_input;
mod bench;
mod broadcast;
mod browser;
mod cli;
mod config_file;
mod convergence;
mod delivery;
mod deployment;
mod directory;
mod doors;
mod failover;
mod groups;
mod inbox;
mod inbox_faults;
mod ingress;
mod js_client;
mod limits;
mod login_policy;
mod observe;
mod permissions;
mod pooled;
mod presence;
mod python;
mod readiness;
mod shutdown;
mod support;
mod web;
mod wire;
