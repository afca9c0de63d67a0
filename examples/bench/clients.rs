//! The probe client's figures (`bench -- --clients`): the same N `HEAD`
//! requests, 64 in flight, sent by the former hand-written HTTP/1.1 pool on
//! hyper (`bench/handwritten.rs`), by the probes' client
//! (`src/transport.rs`: hyper-util's pooled legacy client over
//! hyper-rustls, HTTP/2 by ALPN, idle timeout, a cap on idle connections
//! per host) and by reqwest (what the API client and the proxy path use),
//! against a loopback origin
//! that answers at once and against one that answers after 20 ms (a real
//! origin is latency-bound). Each client and origin runs in a child process
//! of its own, so its CPU time and peak memory are its own.
//!
//! ```text
//! cargo run --release --example bench -- --clients                # N = 100k
//! cargo run --release --example bench -- --clients --sizes 20000 --repeat 3
//! ```

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use origin_watch::transport::{Direct, Transport};
use reqwest::Method;
use testkit::fake_origin::{Behavior, FakeOrigin};
use url::Url;

use super::handwritten::HandWritten;
use super::{CONCURRENCY, arg_value, client_runtime, peak_rss_mb};

const KINDS: [&str; 3] = ["hand-written", "hyper-util", "reqwest"];
const LATENCIES_MS: [u64; 2] = [0, 20];

/// The parent: one child per latency and client, side by side.
pub fn compare(args: &[String]) {
    let exe = std::env::current_exe().expect("own path");
    let n: usize = arg_value(args, "--sizes").map_or(100_000, |s| s.parse().expect("--sizes N"));
    let repeat: usize = arg_value(args, "--repeat").map_or(1, |k| k.parse().expect("--repeat K"));
    println!(
        "origin-watch client bench: {} cores, {n} HEAD requests, {CONCURRENCY} in flight, one origin",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>7} {:>12} {:>9} {:>7} {:>7} {:>7} {:>11} {:>8} {:>6}",
        "origin", "client", "req/s", "ratio", "p50 ms", "p99 ms", "CPU us/req", "peak MB", "conns"
    );
    for latency in LATENCIES_MS {
        for _ in 0..repeat.max(1) {
            let mut own_rate = f64::NAN;
            for kind in KINDS {
                let out = Command::new(&exe)
                    .args(["--client-child", &n.to_string(), kind, &latency.to_string()])
                    .output()
                    .expect("client child");
                if !out.status.success() {
                    println!(
                        "{kind} child failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    continue;
                }
                let line = String::from_utf8_lossy(&out.stdout);
                let f: Vec<f64> = line
                    .split_whitespace()
                    .map(|v| v.parse().unwrap_or(f64::NAN))
                    .collect();
                if kind == "hand-written" {
                    own_rate = f[0];
                }
                println!(
                    "{:>7} {:>12} {:>9.0} {:>7.2} {:>7.2} {:>7.2} {:>11.1} {:>8.1} {:>6.0}",
                    format!("{latency} ms"),
                    kind,
                    f[0],
                    f[0] / own_rate,
                    f[1],
                    f[2],
                    f[3],
                    f[4],
                    f[5]
                );
            }
        }
    }
}

/// Sends `HEAD` requests with one kind of client.
enum Client {
    HandWritten(HandWritten),
    /// The probes' own: hyper-util's pooled client.
    Probes(Transport),
    Reqwest(reqwest::Client),
}

impl Client {
    fn new(kind: &str) -> Client {
        match kind {
            "hand-written" => Client::HandWritten(HandWritten::new().expect("client")),
            "hyper-util" => {
                Client::Probes(Transport::Direct(Direct::new(Vec::new()).expect("client")))
            }
            "reqwest" => Client::Reqwest(
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .pool_max_idle_per_host(CONCURRENCY)
                    .build()
                    .expect("client"),
            ),
            other => panic!("unknown client {other}"),
        }
    }

    /// One `HEAD`; true when it was answered.
    async fn head(&self, url: &Url) -> bool {
        let timeout = Duration::from_secs(10);
        match self {
            Client::HandWritten(c) => {
                match tokio::time::timeout(timeout, c.send(&Method::HEAD, url)).await {
                    Ok(Ok(_)) => true,
                    Ok(Err(e)) => {
                        eprintln!("hand-written: {}", e.why());
                        false
                    }
                    Err(_) => false,
                }
            }
            Client::Probes(t) => t.send(&Method::HEAD, url, timeout).await.is_ok(),
            Client::Reqwest(c) => match c.head(url.as_str()).timeout(timeout).send().await {
                Ok(resp) => resp.bytes().await.is_ok(),
                Err(_) => false,
            },
        }
    }
}

/// Process CPU time (user and system), in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// One client against one origin, measured in this (child) process: req/s,
/// p50 and p99 latency, CPU per request (client and origin together, the
/// origin's share being the same for every client), peak MB, and the
/// connections the origin saw opened.
pub fn child(n: usize, kind: &str, latency_ms: u64) {
    let default = if latency_ms == 0 {
        Behavior::Present
    } else {
        Behavior::Slow(Duration::from_millis(latency_ms))
    };
    let origin = FakeOrigin::spawn_on_own_thread(Vec::new(), default).expect("origin");
    let base = origin.base_url();
    let port = origin.addr().port();
    let runtime = client_runtime();
    let kind = kind.to_owned();
    let task = runtime.spawn(async move {
        let client = Client::new(&kind);
        let client = &client;
        let latencies = Mutex::new(Vec::with_capacity(n));
        let latencies = &latencies;
        // A warm-up round opens the connections, as a pass's first probes do.
        futures::stream::iter(0..CONCURRENCY)
            .map(|i| {
                let url = warm_url(&base, i);
                async move { client.head(&url).await }
            })
            .buffer_unordered(CONCURRENCY)
            .count()
            .await;
        let cpu = cpu_seconds();
        let started = Instant::now();
        let ok = futures::stream::iter(0..n)
            .map(|i| {
                let url = Url::parse(&format!("{base}/img/{i}.png")).expect("url");
                async move {
                    let t = Instant::now();
                    let ok = client.head(&url).await;
                    let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    latencies.lock().expect("latencies").push(us);
                    ok
                }
            })
            .buffer_unordered(CONCURRENCY)
            .filter(|ok| futures::future::ready(*ok))
            .count()
            .await;
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        // Counted while the client still holds its pool.
        let conns = connections(port);
        assert_eq!(ok, n, "every request answered");
        let mut v = latencies.lock().expect("latencies").clone();
        v.sort_unstable();
        let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
        (
            n as f64 / secs,
            pct(0.5),
            pct(0.99),
            cpu * 1e6 / n as f64,
            conns,
        )
    });
    let (rate, p50, p99, cpu_us, conns) = runtime.block_on(task).expect("client task");
    drop(origin);
    println!(
        "{rate:.0} {p50:.2} {p99:.2} {cpu_us:.1} {:.1} {conns}",
        peak_rss_mb()
    );
}

fn warm_url(base: &str, i: usize) -> Url {
    Url::parse(&format!("{base}/warm/{i}.png")).expect("url")
}

/// Established TCP connections to the origin's port, from /proc/net/tcp
/// (the origin's side; state 01), or NaN when unreadable.
fn connections(port: u16) -> f64 {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return f64::NAN;
    };
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3
                && f[3] == "01"
                && f[1]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count() as f64
}
