//! The integration tests: one crate (as ripgrep has it), so the harness in
//! `common` and the library are compiled once, not once per file. Each
//! module is one area; `cargo test --test it <module>::` runs one of them.

mod changed;
mod cli;
mod common;
mod deploy;
mod deploy_passes;
mod discover;
mod discover_pass;
mod hardening;
mod modules;
mod msrv;
mod ops;
mod pass;
mod postgres;
mod probe;
mod safety;
mod shipped_config;
mod store;
mod terminal;
mod tls;
mod transport;
mod vercel;
