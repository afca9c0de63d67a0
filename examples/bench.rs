//! The benchmark: how fast one pass probes, and how much memory it takes.
//!
//! For each size N it generates N sources (95% present, 5% gone: half 404,
//! half 410) in an `images_file`, starts a loopback origin on its own thread
//! and the fake Vercel API, and runs the real pass code:
//!
//! 1. loads and checks the config (start-up time),
//! 2. one dry-run pass (like `once --dry-run`): probes/s, p50/p99 probe latency,
//! 3. one real pass with `confirmations: 1`: API calls for the gone sources,
//!
//! with every decision logged (JSON, through a non-blocking writer) and
//! reported (JSON Lines) to files. Each size runs in a child process so its
//! peak RSS is its own. Beside it, a raw `HEAD` load generator (the same HTTP
//! client with no logic) runs against the same origin, in its own child, for
//! the ratio the performance issue asks for, and `wrk` (when installed,
//! e.g. `apt-get install wrk`) shows what the origin and loopback can take
//! (with `GET`: wrk mishandles bodiless `HEAD` answers).
//!
//! ```text
//! cargo run --release --example bench                 # N = 10k and 100k
//! cargo run --release --example bench -- --million    # also N = 1M
//! cargo run --release --example bench -- --sizes 50000
//! cargo run --release --example bench -- --sizes 100000 --repeat 5   # and the medians
//! cargo run --release --example bench -- --lychee /path/to/lychee --sizes 100000
//! ```
//!
//! `--store` compares a pass with the SQLite store and with a store that
//! keeps nothing (see `bench/store.rs`):
//! `cargo run --release --example bench -- --store --million`.
//! `--discover` measures discovery instead: a loopback site of 10,000 pages
//! (20 optimizer URLs each) behind a sitemap index of 10 sitemaps, read by
//! the real discovery code in a child process (pages/s, sources/s, peak
//! RSS), beside what `wrk` reaches fetching one such page from the same
//! server in the same run:
//!
//! ```text
//! cargo run --release --example bench -- --discover
//! ```
//!
//! `--clients` compares the probes' HTTP client (hyper-util's pooled
//! client) with the hand-written pool it replaced and with reqwest, on loopback and with an origin that answers after
//! 20 ms (see `bench/clients.rs`): `cargo run --release --example bench -- --clients`.
//!
//! `--lychee PATH` runs the lychee link checker (`--method head`,
//! concurrency 256, no per-host limit or interval) over the same N URLs against the same kind of origin,
//! then one origin-watch dry-run pass, and prints both rates.

#[path = "bench/clients.rs"]
mod clients_bench;
#[path = "bench/handwritten.rs"]
mod handwritten;
#[path = "bench/store.rs"]
mod store_bench;

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use origin_watch::config::{Config, Token};
use origin_watch::pass::{PassContext, PassObserver, run_pass};
use origin_watch::policy::Decision;
use origin_watch::probe::{Observation, Prober};
use origin_watch::report::Reporter;
use origin_watch::store::{self, Access, Store};
use origin_watch::transport::{Direct, Transport};
use origin_watch::vercel::VercelClient;
use reqwest::Method;
use testkit::fake_origin::{Behavior, FakeOrigin};
use testkit::fake_vercel::{FakeVercel, FakeVercelConfig};
use tokio_util::sync::CancellationToken;
use url::Url;

/// Probes in flight in the benchmark's config (and in the raw generator).
const CONCURRENCY: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(n) = arg_value(&args, "--child") {
        return child(n.parse().expect("--child N"));
    }
    if let Some(n) = arg_value(&args, "--raw") {
        return raw(n.parse().expect("--raw N"));
    }
    if let Some(n) = arg_value(&args, "--client-child") {
        let (kind, latency) = (&args[2], &args[3]);
        return clients_bench::child(
            n.parse().expect("--client-child N"),
            kind,
            latency.parse().expect("--client-child N KIND MS"),
        );
    }
    if args.iter().any(|a| a == "--clients") {
        return clients_bench::compare(&args);
    }
    if let Some(n) = arg_value(&args, "--store-child") {
        let kind = args.last().expect("--store-child N KIND");
        return store_bench::child(n.parse().expect("--store-child N"), kind);
    }
    if args.iter().any(|a| a == "--store") {
        return store_bench::compare(&args);
    }
    if args.iter().any(|a| a == "--discover-child") {
        return discover_child();
    }
    if args.iter().any(|a| a == "--discover-scan") {
        return discover_scan();
    }
    if args.iter().any(|a| a == "--discover") {
        let exe = std::env::current_exe().expect("own path");
        let repeat: usize =
            arg_value(&args, "--repeat").map_or(1, |k| k.parse().expect("--repeat K"));
        for _ in 0..repeat {
            match Command::new(&exe).arg("--discover-child").output() {
                Ok(out) => {
                    print!("{}", String::from_utf8_lossy(&out.stdout));
                    eprint!("{}", String::from_utf8_lossy(&out.stderr));
                }
                Err(e) => eprintln!("cannot run the discovery child: {e}"),
            }
        }
        return;
    }
    if let Some(n) = arg_value(&args, "--serve") {
        return serve(n.parse().expect("--serve N"));
    }
    if let Some(lychee) = arg_value(&args, "--lychee") {
        let n = arg_value(&args, "--sizes").map_or(100_000, |s| s.parse().expect("--sizes N"));
        return compare_lychee(lychee, n);
    }
    let mut sizes: Vec<usize> = match arg_value(&args, "--sizes") {
        Some(list) => list
            .split(',')
            .map(|s| s.trim().parse().expect("--sizes N,N"))
            .collect(),
        None => vec![10_000, 100_000],
    };
    if args.iter().any(|a| a == "--million") {
        sizes.push(1_000_000);
    }

    let exe = std::env::current_exe().expect("own path");
    println!(
        "origin-watch bench: {} cores, concurrency {CONCURRENCY}, per-host limit {CONCURRENCY}; 5% of sources gone",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>9} {:>6} {:>9} {:>10} {:>6} {:>10} {:>6} {:>9} {:>6} {:>7} {:>7} {:>8} {:>6} {:>9} {:>7}",
        "sources",
        "load s",
        "probes/s",
        "raw HEAD/s",
        "ratio",
        "wrk GET/s",
        "ratio",
        "ab HEAD/s",
        "ratio",
        "p50 ms",
        "p99 ms",
        "peak MB",
        "gone",
        "API calls",
        "wall s"
    );
    // A shared machine is noisy: `--repeat K` runs each size K times and
    // adds a line of medians.
    let repeat: usize = arg_value(&args, "--repeat").map_or(1, |k| k.parse().expect("--repeat K"));
    for n in sizes {
        let mut runs: Vec<[f64; 5]> = Vec::new();
        for _ in 0..repeat.max(1) {
            if let Some(run) = bench_row(&exe, n) {
                runs.push(run);
            }
        }
        if runs.len() > 1 {
            let median = |i: usize| {
                let mut v: Vec<f64> = runs.iter().map(|r| r[i]).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            println!(
                "{:>9} median of {}: {:.0} probes/s (min {:.0}, max {:.0}), ratio to raw HEAD {:.2}, to wrk GET {:.2}, to ab HEAD {:.2}, peak {:.1} MB",
                n,
                runs.len(),
                median(0),
                runs.iter().map(|r| r[0]).fold(f64::INFINITY, f64::min),
                runs.iter().map(|r| r[0]).fold(0.0, f64::max),
                median(1),
                median(2),
                median(4),
                median(3)
            );
        }
    }
}

/// One benchmark row for `n` sources: the raw generators, then the pass.
/// Returns probes/s, the ratios to the raw loop and to wrk, peak MB, and
/// the ratio to ab.
fn bench_row(exe: &std::path::Path, n: usize) -> Option<[f64; 5]> {
    {
        let raw = run_child(exe, "--raw", n).unwrap_or_default();
        let mut raw = raw.split_whitespace();
        let raw_rate: f64 = raw.next().and_then(|r| r.parse().ok()).unwrap_or(f64::NAN);
        let wrk_rate: f64 = raw.next().and_then(|r| r.parse().ok()).unwrap_or(f64::NAN);
        let ab_rate: f64 = raw.next().and_then(|r| r.parse().ok()).unwrap_or(f64::NAN);
        let Some(line) = run_child(exe, "--child", n) else {
            println!("{n:>9} child failed");
            return None;
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        let probes_per_s: f64 = f[1].parse().unwrap_or(f64::NAN);
        let peak: f64 = f[4].parse().unwrap_or(f64::NAN);
        println!(
            "{:>9} {:>6} {:>9} {:>10.0} {:>6.2} {:>10.0} {:>6.2} {:>9.0} {:>6.2} {:>7} {:>7} {:>8} {:>6} {:>9} {:>7}",
            n,
            f[0],
            f[1],
            raw_rate,
            probes_per_s / raw_rate,
            wrk_rate,
            probes_per_s / wrk_rate,
            ab_rate,
            probes_per_s / ab_rate,
            f[2],
            f[3],
            f[4],
            f[5],
            f[6],
            f[7]
        );
        Some([
            probes_per_s,
            probes_per_s / raw_rate,
            probes_per_s / wrk_rate,
            peak,
            probes_per_s / ab_rate,
        ])
    }
}

fn arg_value<'a>(args: &'a [String], key: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == key)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Runs this benchmark as a child and returns its last stdout line.
fn run_child(exe: &std::path::Path, mode: &str, n: usize) -> Option<String> {
    let out = Command::new(exe)
        .args([mode, &n.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .last()
        .map(str::to_owned)
}

fn gone_behavior(i: usize) -> Option<Behavior> {
    match i % 40 {
        0 => Some(Behavior::Status(404)),
        20 => Some(Behavior::Status(410)),
        _ => None,
    }
}

fn start_origin(n: usize) -> FakeOrigin {
    let routes = (0..n).filter_map(|i| gone_behavior(i).map(|b| (format!("/img/{i}.png"), b)));
    FakeOrigin::spawn_on_own_thread(routes, Behavior::Present).expect("origin starts")
}

/// Peak resident memory of this process, in MiB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU seconds this process has used, and the part of it that threads
/// named `name` used (from `/proc`; clock ticks of 10 ms, so a figure over
/// a second or more is good to about 1%).
fn cpu_seconds(name: &str) -> (f64, f64) {
    let ticks = |stat: &str| -> f64 {
        // After the command name's closing parenthesis: utime and stime are
        // the 12th and 13th fields.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
        (n(11) + n(12)) / 100.0
    };
    let all = ticks(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default());
    let mut named = 0.0;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            named += ticks(&std::fs::read_to_string(task.path().join("stat")).unwrap_or_default());
        }
    }
    (all, named)
}

/// Probe latencies, in microseconds.
#[derive(Default)]
struct Latencies(Mutex<Vec<u32>>);

impl PassObserver for Latencies {
    fn probed(&self, _watch: &str, obs: &Observation, _sources: u32) {
        let us = obs.elapsed.as_micros().min(u32::MAX as u128) as u32;
        self.0.lock().expect("latencies").push(us);
    }
}

impl Latencies {
    fn percentile_ms(&self, p: f64) -> f64 {
        let mut v = self.0.lock().expect("latencies").clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i] as f64 / 1000.0
    }
}

/// One size, measured in this (child) process.
/// The client's runtime: `BENCH_RUNTIME=current` runs it on one thread.
fn client_runtime() -> tokio::runtime::Runtime {
    match std::env::var("BENCH_RUNTIME").as_deref() {
        Ok("current") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .expect("runtime")
}

fn child(n: usize) {
    let origin = start_origin(n);
    let dir = std::env::temp_dir().join(format!("origin-watch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    // Every decision is logged, as JSON, through the buffered writer `main`
    // uses, which never drops a line.
    let log = std::fs::File::create(dir.join("log.jsonl")).expect("log file");
    let (writer, _guard) = origin_watch::logsink::BufferedSink::new(log);
    // BENCH_LOG=off measures the pass without its logs, to see what they cost.
    if std::env::var("BENCH_LOG").as_deref() != Ok("off") {
        tracing_subscriber::fmt()
            .json()
            .with_writer(writer)
            .with_max_level(tracing::Level::INFO)
            .init();
    }

    let runtime = client_runtime();
    let work = dir.clone();
    let task = runtime.spawn(async move {
        let dir = work;
        let api = FakeVercel::start(FakeVercelConfig::new("bench"))
            .await
            .expect("fake api");
        let mut images = std::io::BufWriter::new(
            std::fs::File::create(dir.join("images.txt")).expect("images file"),
        );
        for i in 0..n {
            writeln!(images, "/img/{i}.png").expect("write images");
        }
        images.flush().expect("flush images");
        drop(images);
        let yaml = format!(
            "vercel: {{ api_base: '{}' }}\nstate: state.db\ndefaults: {{ confirmations: 1, concurrency: {CONCURRENCY}, per_host_concurrency: {CONCURRENCY}, max_purges_per_pass: {n}, retries: 0 }}\nwatches:\n  - {{ name: bench, project: bench, origin: '{}', images_file: images.txt }}\n",
            api.base_url(),
            origin.base_url()
        );
        let config_path = dir.join("watch.yaml");
        std::fs::write(&config_path, yaml).expect("write config");

        let wall = Instant::now();
        let started = Instant::now();
        let config = Config::load(&config_path).expect("config");
        let load_s = started.elapsed().as_secs_f64();

        let latencies = Arc::new(Latencies::default());
        let report = std::fs::File::create(dir.join("report.jsonl")).expect("report file");
        let ctx = |vercel: Option<Arc<VercelClient>>, store: Arc<dyn Store>| PassContext {
            prober: Arc::new(Prober::new().expect("client")),
            vercel,
            store,
            reporter: Arc::new(Reporter::to_writer(Box::new(report.try_clone().expect("report")))),
            observer: Some(latencies.clone() as Arc<dyn PassObserver>),
        };
        let cancel = CancellationToken::new();

        let dry = ctx(None, store::open(config.state(), None, Access::DryRun).await.expect("state"));
        let started = Instant::now();
        let outcome = run_pass(&dry, config.watches(), &cancel).await.expect("dry pass");
        let dry_s = started.elapsed().as_secs_f64();
        let probes = config.watches()[0].probes().len() as f64;
        let gone = outcome.watches[0].gone;
        let (p50, p99) = (latencies.percentile_ms(0.5), latencies.percentile_ms(0.99));

        let vercel = VercelClient::new(config.vercel(), Token::new("bench")).expect("client");
        let real = ctx(Some(Arc::new(vercel)), store::open(config.state(), None, Access::Write).await.expect("state"));
        let outcome = run_pass(&real, config.watches(), &cancel).await.expect("real pass");
        let purged = outcome.total(Decision::Purge);
        let calls = api.calls().len();
        assert_eq!(purged, gone, "every gone source is purged");
        assert_eq!(api.purged().len(), gone, "each gone source reached the API once");
        assert_eq!(calls, purged.div_ceil(8), "purge calls are ceil(N/8)");

        println!(
            "{:.2} {:.0} {:.2} {:.2} {:.1} {} {} {:.1}",
            load_s,
            probes / dry_s,
            p50,
            p99,
            peak_rss_mb(),
            gone,
            calls,
            wall.elapsed().as_secs_f64()
        );
    });
    runtime.block_on(task).expect("bench task");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The raw generator: the probes' HTTP client, `HEAD` to the same URLs, no logic.
fn raw(n: usize) {
    let origin = start_origin(n);
    let base_url = origin.base_url();
    let base = base_url.clone();
    let runtime = client_runtime();
    let task = runtime.spawn(async move {
        let client = Transport::Direct(Direct::new(Vec::new()).expect("client"));
        let client = &client;
        let started = Instant::now();
        let ok = futures::stream::iter(0..n)
            .map(|i| {
                let url = Url::parse(&format!("{base}/img/{i}.png")).expect("url");
                async move {
                    client
                        .send(&Method::HEAD, &url, Duration::from_secs(10))
                        .await
                        .is_ok()
                }
            })
            .buffer_unordered(CONCURRENCY)
            .filter(|ok| futures::future::ready(*ok))
            .count()
            .await;
        assert_eq!(ok, n, "every raw request answered");
        n as f64 / started.elapsed().as_secs_f64()
    });
    let rate = runtime.block_on(task).expect("raw task");
    let wrk = wrk_rate(&base_url).map_or("-".to_owned(), |r| format!("{r:.0}"));
    let ab = ab_rate(&base_url, n).map_or("-".to_owned(), |r| format!("{r:.0}"));
    drop(origin);
    println!("{rate:.0} {wrk} {ab}");
}

/// ApacheBench (when installed, `apt-get install apache2-utils`): a raw
/// `HEAD` load generator (`-i`), keep-alive, 64 in flight, against a
/// present image of the same origin.
fn ab_rate(base: &str, n: usize) -> Option<f64> {
    let out = Command::new("ab")
        .args(["-i", "-k", "-q", "-c", "64", "-n"])
        .arg(n.clamp(10_000, 200_000).to_string())
        .arg(format!("{base}/img/1.png"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Requests per second:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// `wrk` (when installed) with 64 connections for 5 s against a present
/// image of the same origin: what the origin and loopback can take. It
/// sends `GET` (a 1-byte body): wrk's parser waits for the body that a
/// `HEAD` answer announces but never sends.
fn wrk_rate(base: &str) -> Option<f64> {
    let out = Command::new("wrk")
        .args(["-t1", "-c64", "-d5s"])
        .arg(format!("{base}/img/1.png"))
        .output()
        .ok();
    let text = String::from_utf8(out?.stdout).ok()?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

/// An origin for an outside client: prints its base URL, serves until stdin closes.
fn serve(n: usize) {
    let origin = start_origin(n);
    println!("{}", origin.base_url());
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
    drop(origin);
}

/// lychee and origin-watch over the same N URLs, each against a fresh origin.
fn compare_lychee(lychee: &str, n: usize) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let exe = std::env::current_exe().expect("own path");
    let mut server = Command::new(&exe)
        .args(["--serve", &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("origin child");
    let mut base = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut base)
        .expect("origin URL");
    let base = base.trim().to_owned();
    let list = std::env::temp_dir().join(format!("origin-watch-lychee-{}.txt", std::process::id()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&list).expect("url list"));
    for i in 0..n {
        writeln!(out, "{base}/img/{i}.png").expect("write url list");
    }
    out.flush().expect("flush url list");
    drop(out);

    let started = Instant::now();
    let status = Command::new(lychee)
        .args([
            "--no-progress",
            "--method",
            "head",
            "--max-concurrency",
            "256",
            "--host-concurrency",
            "256",
            "--host-request-interval",
            "0s",
            "--max-retries",
            "0",
            "--accept",
            "200..=299,404,410",
        ])
        .arg(&list)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let lychee_s = started.elapsed().as_secs_f64();
    drop(server.stdin.take());
    let _ = server.wait();
    let _ = std::fs::remove_file(&list);
    match status {
        Ok(s) => println!(
            "lychee: {n} URLs in {lychee_s:.1} s = {:.0} URLs/s (exit {s})",
            n as f64 / lychee_s
        ),
        Err(e) => println!("lychee could not run: {e}"),
    }
    if let Some(line) = run_child(&exe, "--child", n) {
        let probes_per_s: f64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        println!(
            "origin-watch: {probes_per_s:.0} probes/s ({:.1}x lychee)",
            probes_per_s * lychee_s / n as f64
        );
    }
}

/// Pages of the discovery benchmark's site, and optimizer URLs on each.
const SITE_PAGES: usize = 10_000;
const SITE_SITEMAPS: usize = 10;
const URLS_PER_PAGE: usize = 20;

/// One page of the benchmark site: a Next.js-like page with 20 `next/image`
/// tags (a `srcSet` of two and a `src` each, 20 distinct sources) and a few
/// links, about 9 KB.
fn site_page(i: usize) -> String {
    let mut html = String::with_capacity(10_000);
    html.push_str(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charSet=\"utf-8\"/><title>page</title>",
    );
    html.push_str(
        "<script src=\"/_next/static/chunks/main.js\" async=\"\"></script></head><body><main>",
    );
    for j in 0..URLS_PER_PAGE {
        let u = format!("%2Fimages%2F{i}%2F{j}.png");
        html.push_str(&format!(
            "<img alt=\"image {j}\" loading=\"lazy\" width=\"640\" height=\"480\" decoding=\"async\" \
             srcSet=\"/_next/image?url={u}&amp;w=640&amp;q=75 1x, /_next/image?url={u}&amp;w=1080&amp;q=75 2x\" \
             src=\"/_next/image?url={u}&amp;w=1080&amp;q=75\"/>"
        ));
    }
    let next = (i + 1) % SITE_PAGES;
    html.push_str(&format!(
        "<a href=\"/\">home</a> <a href=\"/p/{next}\">next</a></main>\
         <script>self.__next_f.push([1,\"payload\"])</script></body></html>"
    ));
    html
}

/// The benchmark site: `/sitemap-index.xml` -> 10 sitemaps -> 10,000 pages,
/// the pages made on request, on a thread of its own.
fn start_site() -> testkit::FakeSite {
    use testkit::fake_site::{FakeSite, Reply};
    let per = SITE_PAGES / SITE_SITEMAPS;
    let generator: testkit::fake_site::Generator = Arc::new(move |path: &str| {
        let i: usize = path.strip_prefix("/p/")?.parse().ok()?;
        (i < SITE_PAGES).then(|| Reply::html(site_page(i)))
    });
    // The sitemaps name the site by a placeholder until its port is known.
    let site = FakeSite::spawn_on_own_thread([], Some(generator)).expect("site starts");
    let base = site.base_url();
    let mut index = String::from("<?xml version=\"1.0\"?><sitemapindex>");
    for k in 0..SITE_SITEMAPS {
        index.push_str(&format!(
            "<sitemap><loc>{base}/sitemaps/{k}.xml</loc></sitemap>"
        ));
        let mut map = String::from("<?xml version=\"1.0\"?><urlset>");
        for i in k * per..(k + 1) * per {
            map.push_str(&format!("<url><loc>{base}/p/{i}</loc></url>"));
        }
        map.push_str("</urlset>");
        site.set(&format!("/sitemaps/{k}.xml"), Reply::xml(map));
    }
    index.push_str("</sitemapindex>");
    site.set("/sitemap-index.xml", Reply::xml(index));
    site
}

/// The page scanner alone, on one thread, over the benchmark site's pages
/// (made beforehand): what a page costs the client before any HTTP.
fn discover_scan() {
    use origin_watch::discover::{Site, html};
    let base = Url::parse("http://127.0.0.1:3000/").expect("base");
    let site = Site::new(&base, None);
    let pages: Vec<(Url, String)> = (0..SITE_PAGES)
        .map(|i| (base.join(&format!("/p/{i}")).expect("page"), site_page(i)))
        .collect();
    let bytes: usize = pages.iter().map(|(_, p)| p.len()).sum();
    let mut runs = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut sources = 0;
        for (url, page) in &pages {
            sources += html::scan(page.as_bytes(), url, &site, true)
                .expect("a page within the limits")
                .sources
                .len();
        }
        // Each source once a page, though named in `src` and in each
        // `srcSet` candidate.
        assert_eq!(sources, SITE_PAGES * URLS_PER_PAGE, "every source");
        runs.push(started.elapsed().as_secs_f64());
    }
    runs.sort_by(f64::total_cmp);
    let secs = runs[runs.len() / 2];
    println!(
        "scan only, one thread, median of {}: {:.1} us/page, {:.0} pages/s, {:.0} MB/s ({} pages of {:.1} KB)",
        runs.len(),
        secs * 1e6 / SITE_PAGES as f64,
        SITE_PAGES as f64 / secs,
        bytes as f64 / secs / 1e6,
        SITE_PAGES,
        bytes as f64 / SITE_PAGES as f64 / 1e3,
    );
}

/// `wrk` fetching one page of the site (64 connections, 5 s).
fn wrk_page_rate(url: &str) -> Option<f64> {
    let out = Command::new("wrk")
        .args(["-t1", "-c64", "-d5s", url])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

fn discover_child() {
    let site = start_site();
    let wrk = wrk_page_rate(&site.url("/p/1"));
    let yaml = format!(
        "defaults: {{ concurrency: {CONCURRENCY}, per_host_concurrency: {CONCURRENCY} }}\n\
         watches:\n  - name: bench\n    project: p\n    origin: '{}'\n    \
         discover: {{ sitemaps: [/sitemap-index.xml], follow_links: true, max_pages: {SITE_PAGES} }}\n",
        site.base_url()
    );
    let config = Config::from_yaml(&yaml).expect("bench config");
    let runtime = client_runtime();
    // On a worker thread, as the binary runs its command (`src/main.rs`).
    let task = runtime.spawn(async move {
        let prober = Arc::new(Prober::new().expect("prober"));
        let discoverer = origin_watch::discover::Discoverer::new(prober);
        let cpu_before = cpu_seconds("fake-site");
        let started = Instant::now();
        let found = discoverer
            .discover_watch(&config.watches()[0], &CancellationToken::new())
            .await
            .expect("a discover: block");
        let elapsed = started.elapsed();
        let cpu_after = cpu_seconds("fake-site");
        (found, (elapsed, cpu_before, cpu_after))
    });
    let (found, elapsed) = runtime.block_on(task).expect("the discovery task");
    let (elapsed, (all0, site0), (all1, site1)) = elapsed;
    // The client's CPU per page: the process's, less the site's thread.
    let client_us = ((all1 - all0) - (site1 - site0)) * 1e6 / SITE_PAGES as f64;
    let site_us = (site1 - site0) * 1e6 / SITE_PAGES as f64;
    assert!(
        found.complete(),
        "{:?}",
        &found.errors[..found.errors.len().min(5)]
    );
    assert_eq!(found.pages_read, SITE_PAGES, "every page read");
    assert_eq!(
        found.sources.len(),
        SITE_PAGES * URLS_PER_PAGE,
        "every source found"
    );
    let secs = elapsed.as_secs_f64();
    let pages_per_s = found.pages_read as f64 / secs;
    let wrk_text = wrk.map_or("- (wrk not installed)".to_owned(), |r| format!("{r:.0}"));
    let ratio = wrk.map_or("-".to_owned(), |r| format!("{:.2}", pages_per_s / r));
    println!(
        "discovery: {} pages, {} sitemaps, {} sources in {:.2} s: {:.0} pages/s, {:.0} sources/s; \
         wrk GET of one page: {wrk_text}/s (ratio {ratio}); peak RSS {:.1} MB; \
         CPU us/page: client {client_us:.0}, site {site_us:.0}",
        found.pages_read,
        found.sitemaps_read,
        found.sources.len(),
        secs,
        pages_per_s,
        found.sources.len() as f64 / secs,
        peak_rss_mb(),
    );
}
