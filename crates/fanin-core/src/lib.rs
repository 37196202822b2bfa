//! fanin-core: the part of fanin that is pure. What the files say (config,
//! SOPs, their conditions, cron schedules, topic filters), what an event is,
//! and the checks that tie them together. Everything here is a function of
//! its inputs: time and ids come in as arguments, files come in as text, and
//! nothing reads a clock, randomness, a socket or the environment — so every
//! rule can be tested with injected time, and the runtime crate (`fanin`)
//! owns every effect.
//!
//! Layers inside the crate, lowest first; a module imports only from the
//! ones before it: `event`, `topic`, `cron`, `strict_toml`, `net` < `sop` <
//! `config`, `checks` < `runs` (states, records), `records`, `envelope` <
//! `matching`, `admission`, the run life cycle and planning.

pub mod admission;
pub mod checks;
pub mod config;
pub mod cron;
pub mod envelope;
pub mod event;
pub mod matching;
pub mod net;
#[cfg(any(test, feature = "test-support"))]
pub mod proptest_support;
pub mod records;
pub mod routing_key;
pub mod runs;
pub mod sop;
pub mod strict_toml;
pub mod topic;
