//! A standalone fake of Vercel's purge-by-source-image API on loopback, for
//! the demo and for trying origin-watch by hand without a Vercel account.
//!
//! It is the same fake the tests use (`testkit::FakeVercel`):
//! it enforces the documented request shape, answers 200 (or the faults you
//! ask for) and prints one JSON line per call it receives:
//!
//! ```text
//! cargo run --example fake_vercel -- --listen 127.0.0.1:8787 --token secret --fail-429 1
//! VERCEL_TOKEN=secret origin-watch once   # with vercel.api_base: http://127.0.0.1:8787
//! ```
//!
//! With `--origin URL` it also serves a simulated image cache, so you can
//! see what a visitor gets before and after a purge or an invalidation:
//! `curl -si 'http://127.0.0.1:8787/_next/image?url=/images/hero.png&w=640&q=75'`.
//!
//! The token never appears in the output; each line says whether the call's
//! `Authorization` matched instead. Runs until Ctrl-C (or SIGTERM).

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use serde_json::{Map, Value, json};
use testkit::{FakeVercel, FakeVercelConfig, RecordedCall};

/// Fake Vercel purge API (POST /v1/edge-cache/dangerously-delete-by-src-images) on loopback.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the line on stdout says which).
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Bearer token calls must carry.
    #[arg(long, default_value = "test-token")]
    token: String,
    /// Answer the first N valid calls 429 with Retry-After.
    #[arg(long, default_value_t = 0, value_name = "N")]
    fail_429: u32,
    /// Retry-After seconds sent with those 429s.
    #[arg(long, default_value_t = 1, value_name = "S")]
    retry_after: u64,
    /// After the 429s, answer the next N valid calls 500.
    #[arg(long, default_value_t = 0, value_name = "N")]
    fail_500: u32,
    /// After those, answer every valid call with this status (e.g. 402, 403).
    #[arg(long, value_name = "CODE")]
    status: Option<u16>,
    /// A project `GET /v9/projects/{idOrName}` knows (for `check --online`):
    /// `NAME` (personal) or `NAME@TEAM_ID`; repeatable.
    #[arg(long = "project", value_name = "NAME[@TEAM_ID]")]
    projects: Vec<String>,
    /// Wait this long before answering each call (e.g. 5s), to try shutdowns.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    delay: Option<std::time::Duration>,
    /// Also serve a simulated image cache at GET /_next/image?url=SRC, filled
    /// from this origin (x-vercel-cache: MISS, HIT, STALE after an invalidate,
    /// MISS again after a delete).
    #[arg(long, value_name = "URL")]
    origin: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let expected_authorization = format!("Bearer {}", args.token);
    let fake = FakeVercel::start_on(
        args.listen,
        FakeVercelConfig {
            token: args.token,
            fail_429: args.fail_429,
            retry_after_secs: args.retry_after,
            retry_after_form: testkit::RetryAfterForm::Seconds,
            fail_500: args.fail_500,
            fixed_status: args.status,
            delay: args.delay.unwrap_or_default(),
            origin: args.origin,
            projects: args
                .projects
                .iter()
                .map(|p| match p.split_once('@') {
                    Some((name, team)) => testkit::FakeProject::new(name, Some(team), None),
                    None => testkit::FakeProject::new(p, None, None),
                })
                .collect(),
        },
    )
    .await
    .with_context(|| format!("cannot listen on {}", args.listen))?;

    fake.on_call(move |call| {
        let authorized = call.authorization.as_deref() == Some(expected_authorization.as_str());
        print_line(&call_line(call, authorized));
    });
    print_line(&format!("fake vercel api listening on {}", fake.base_url()));

    shutdown_signal().await?;
    fake.shutdown().await;
    Ok(())
}

/// One call as a JSON line, without the token.
fn call_line(call: &RecordedCall, authorized: bool) -> String {
    let query: Map<String, Value> = call
        .query
        .iter()
        .map(|(key, value)| (key.clone(), Value::from(value.as_str())))
        .collect();
    json!({
        "method": call.method,
        "path": call.path,
        "query": query,
        "status": call.status,
        "authorized": authorized,
        "srcImages": call.src_images,
        "revalidationDeadlineSeconds": call.deadline,
    })
    .to_string()
}

/// Writes a line and flushes it, so a script reading a pipe sees each call
/// as it happens; a closed stdout is ignored rather than panicking the server.
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot install the SIGTERM handler")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot wait for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    Ok(())
}
