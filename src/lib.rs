//! icpgate: an edge proxy that enforces ICP filing (备案) per domain.
//!
//! The library holds everything; `src/main.rs` only parses the command line.
//! Rooms: [`hostname`] (canonical names), [`table`] (CSV load and
//! validation), [`snapshot`] (immutable lookup structure and hot-swap
//! holder), [`decision`] (rules R1–R10), [`config`], [`cli`] (the `check`
//! and `validate` commands).

pub mod admin;
pub mod alloc;
pub mod block;
pub mod cli;
pub mod config;
pub mod decision;
pub mod demo;
pub mod fetch;
pub mod flip;
pub mod hostname;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod run;
pub mod snapshot;
pub mod sniff;
#[doc(hidden)]
pub mod synth;
pub mod table;
pub mod top;
