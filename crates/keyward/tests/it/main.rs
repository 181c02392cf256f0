//! Keyward's integration tests: one binary (one link of the gateway) with a module per
//! suite. Most start the real `keyward serve` binary on 127.0.0.1 port 0 against
//! `keyward-sim` through [`support`]; run one suite with `cargo test -p keyward --test it
//! e2e::` (or any test name filter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// End-to-end tests may assert generous wall-clock bounds (the real binary keeps real time),
// and the chaos suite reports its figures on stderr.
#![allow(clippy::disallowed_methods, clippy::print_stderr)]
// A scenario reads top to bottom (a drill is long); test helpers' futures are not on a
// request path.
#![allow(clippy::too_many_lines, clippy::large_futures)]

mod support;

mod admin;
mod alerts;
mod chaos;
mod check;
mod cli;
mod clients;
mod cloud;
mod e2e;
mod fleet;
mod mixed_traffic;
mod oauth;
mod rotation;
mod scenarios;
mod security;
mod status_page;
mod telemetry;
mod translation;
