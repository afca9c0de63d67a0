#![forbid(unsafe_code)]
#![deny(unreachable_pub)]
//! origin-watch: probe source images at their origin, purge Vercel's image
//! cache for the ones that are gone, and log every decision.
//!
//! Data flows one way, and the modules are listed in that order:
//!
//! - [`cli`]: the command line (clap derive); [`app`] wires the commands; [`setup`] is what
//!   `once`, `audit` and `run` share (config as amended, pass context, summary, errors).
//! - [`config`]: `watch.yaml`, parsed raw and then checked into a [`config::Config`];
//!   [`sources`] turns a watch's images into deduplicated, alias-grouped probe targets.
//! - [`discover`]: finds a watch's sources on its site (sitemaps, pages, a list); knows
//!   nothing of probes or the store.
//! - [`shard`]: `--shard K/N`, a stable split of the sources between processes.
//! - [`schedule`]: cron expressions; [`sidecar`] fires passes on them for `run`.
//! - [`probe`]: HTTP probes of origin URLs into [`probe::Observation`]s; decides nothing.
//!   [`transport`] is its HTTP client; [`tls`] says which CAs every client trusts.
//! - [`policy`]: pure decisions from an observation and the previous state.
//! - [`judge`]: pure: one source's observation and record -> its decision, what to write, or the call it is due for.
//! - [`guard`]: pure blast-radius checks over a whole pass.
//! - [`plan`]: pure: settled decisions into API batches per (endpoint, project, team, slug).
//! - [`vercel`]: the purge API client (batches of at most 8, retries, error mapping).
//! - [`store`]: the inventory, decision history and API ledger (SQLite), with the single-writer lock.
//! - [`pass`]: one pass over one or more watches: probe, decide, guard, purge, save, report.
//! - [`progress`]: the terminal progress bar of `once` and `audit`.
//! - [`report`]: decision records as JSON Lines and the human summary.
//! - [`online`]: `check --online`, the read-only API calls that say a setup will work.
//! - [`notify`]: the optional webhook told of guards, failed calls and purges.
//! - [`metrics`]: Prometheus metrics and `/healthz` for `run --listen`.
//! - [`backoff`]: the waits before retrying (exponential with jitter, `Retry-After`).
//! - [`exit`]: the exit codes; [`logsink`]: the buffered writer behind the logs.
//! - [`redact`]: masks the token, registered secrets and URL passwords in all output.
//! - [`files`]: reading a capped regular file (config, `images_file`, `ca_file`).
//!
//! The modules form layers with no cycle (`tests/it/modules.rs` checks it):
//! `files`, `tls` and `transport` at the bottom, then `probe`, `policy`,
//! `store`, `config`, and above them `vercel`, `discover`, `judge`, `plan`,
//! `pass`, `notify` and the commands.
//!
//! The loopback fakes (an origin and the Vercel API) live in the `testkit` crate beside this one,
//! a dev-dependency only: the shipped binary holds none of them.

/// The `User-Agent` of every request the watcher sends (probes, discovery,
/// the Vercel API, the webhook).
pub const USER_AGENT: &str = concat!("origin-watch/", env!("CARGO_PKG_VERSION"));

/// Serializes fieldless enums as their `as_str`, the one place their names
/// are spelled: logs, reports, the store and serde cannot disagree.
macro_rules! serialize_as_str {
    ($($t:ty),+ $(,)?) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    )+};
}

pub mod app;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod discover;
pub mod exit;
pub mod files;
pub mod guard;
pub mod judge;
pub mod logsink;
pub mod metrics;
pub mod notify;
pub mod online;
pub mod pass;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod progress;
pub mod redact;
pub mod report;
pub mod schedule;
pub mod setup;
pub mod shard;
pub mod sidecar;
pub mod sources;
pub mod store;
pub mod tls;
pub mod transport;
pub mod vercel;
