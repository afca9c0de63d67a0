//! The commands, wired from the modules: `check` prints the plan, `once`
//! and `audit` run one pass, `run` hands over to the sidecar loop. `main`
//! only parses the command line, installs logging and signals, and maps the
//! result to an exit code.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;

use crate::cli::{Command, ExplainArgs, Global, PassArgs, StateCommand};
use crate::config::Config;
use crate::exit::Exit;
use crate::pass::run_pass;
use crate::probe::Prober;
use crate::progress::Progress;
use crate::redact::for_stdout;
use crate::store::{self, Access, Store, StoreError};

pub use crate::setup::AppError;
use crate::setup::{context, load_config, notifier, print_outcome, report_written};

/// Runs a command to its end.
pub async fn execute(
    command: Command,
    global: &Global,
    cancel: CancellationToken,
) -> Result<Exit, AppError> {
    match command {
        // Written whole to a buffer first: a closed pipe (`| head`) is then
        // an ignored write error, not a panic inside the generator.
        Command::Completions { shell } => {
            let mut cmd = <crate::cli::Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "origin-watch", &mut out);
            let _ = std::io::stdout().write_all(&out);
            return Ok(Exit::Ok);
        }
        Command::Man => {
            let _ = std::io::stdout().write_all(&man_page());
            return Ok(Exit::Ok);
        }
        _ => {}
    }
    let config = load_config(global)?;
    match command {
        Command::Completions { .. } | Command::Man => Ok(Exit::Ok),
        Command::Check(args) => {
            print_plan(&config, &mut std::io::stdout().lock());
            if args.online {
                return crate::online::check_online(&config).await;
            }
            Ok(Exit::Ok)
        }
        Command::Discover => discover(&config, &cancel).await,
        Command::Once(args) => one_pass(&config, &args, &cancel).await,
        Command::State(cmd) => state_command(&config, global, cmd).await,
        Command::Explain(args) => explain(&config, global, &args).await,
        Command::Audit(report) => {
            let args = PassArgs {
                dry_run: true,
                report,
            };
            one_pass(&config, &args, &cancel).await
        }
        Command::Run(args) => crate::sidecar::sidecar(config, global, args, cancel).await,
    }
}

/// `discover`: each selected watch's discovery, its sources as JSON Lines
/// on stdout and a summary per watch in the logs. Probes nothing, writes
/// no state. Exit 1 when a discovery was partial (its errors are logged).
async fn discover(config: &Config, cancel: &CancellationToken) -> Result<Exit, AppError> {
    let prober = Arc::new(Prober::trusting(config.trust()).map_err(AppError::client("probe"))?);
    let discoverer = crate::discover::Discoverer::new(prober);
    let mut exit = Exit::Ok;
    for w in config.watches() {
        let Some(found) = discoverer.discover_watch(w, cancel).await else {
            tracing::info!(watch = %w.name, "no discover: block; nothing to discover");
            continue;
        };
        let mut out = Vec::with_capacity(found.sources.len() * 80);
        for f in &found.sources {
            let line = serde_json::json!({"watch": w.name, "src": f.src, "found_on": &*f.found_on});
            let _ = writeln!(out, "{line}");
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(&out);
        let _ = stdout.flush();
        drop(stdout);
        for e in &found.errors {
            tracing::warn!(watch = %w.name, error = %e, "discovery incomplete");
        }
        tracing::info!(
            watch = %w.name,
            sources = found.sources.len(),
            pages_read = found.pages_read,
            sitemaps_read = found.sitemaps_read,
            errors = found.errors.len(),
            complete = found.complete(),
            elapsed_ms = found.elapsed.as_millis() as u64,
            "discovered"
        );
        if !found.complete() {
            exit = Exit::PurgeFailed;
        }
        if cancel.is_cancelled() {
            break;
        }
    }
    Ok(exit)
}

/// `once` and `audit`: one pass, with a progress bar when stderr is a terminal.
async fn one_pass(
    config: &Config,
    args: &PassArgs,
    cancel: &CancellationToken,
) -> Result<Exit, AppError> {
    let mut ctx = context(config, args).await?;
    if !args.dry_run {
        own_every_watch(&*ctx.store, config).await?;
    }
    let progress = std::io::stderr().is_terminal().then(|| {
        let sources = config
            .watches()
            .iter()
            .map(|w| w.sources().len() as u64)
            .sum();
        Arc::new(Progress::new(sources))
    });
    if let Some(p) = &progress {
        ctx.observer = Some(p.clone());
    }
    let started = store::millis(Utc::now());
    let outcome = run_pass(&ctx, config.watches(), cancel).await;
    if let Some(p) = &progress {
        p.finish();
    }
    if let Some(n) = notifier(config, args)? {
        n.after(&*ctx.store, started, &outcome).await;
    }
    let outcome = outcome.map_err(AppError::StateSave)?;
    report_written(&ctx, &args.report)?;
    print_outcome(&outcome).map_err(AppError::Stdout)?;
    if let Some(e) = &outcome.store_error {
        tracing::error!(error = %e, "the pass ran, but not all of it could be recorded; it is decided again next pass");
    }
    Ok(outcome.exit())
}

/// Takes every watch of the pass (a shared store: one process acts for a
/// watch at a time); one that another process owns stops the command
/// before anything is probed.
async fn own_every_watch(store: &dyn Store, config: &Config) -> Result<(), AppError> {
    for w in config.watches() {
        match store.acquire(&w.name).await.map_err(AppError::StateOpen)? {
            store::Ownership::Owned => {}
            store::Ownership::Standby { owner } => {
                return Err(AppError::StateOpen(StoreError::Owned {
                    path: store.describe().into(),
                    watch: w.name.clone(),
                    owner,
                }));
            }
        }
    }
    Ok(())
}

/// The man page: one page with every command's synopsis and options (the
/// clap definition, rendered by clap_mangen) and the exit codes.
pub fn man_page() -> Vec<u8> {
    use clap_mangen::Man;
    let cmd = <crate::cli::Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    let top = Man::new(cmd.clone());
    let rendered: std::io::Result<()> = (|| {
        top.render_title(&mut out)?;
        top.render_name_section(&mut out)?;
        top.render_synopsis_section(&mut out)?;
        top.render_description_section(&mut out)?;
        top.render_options_section(&mut out)?;
        out.extend_from_slice(b".SH COMMANDS\n");
        // Every command, and the commands under it (`state show`, ...).
        let mut subs: Vec<(String, clap::Command)> = Vec::new();
        let not_help = |s: &&clap::Command| s.get_name() != "help";
        for sub in cmd.get_subcommands().filter(not_help) {
            let name = format!("{} {}", cmd.get_name(), sub.get_name());
            subs.push((name.clone(), sub.clone()));
            for nested in sub.get_subcommands().filter(not_help) {
                subs.push((format!("{name} {}", nested.get_name()), nested.clone()));
            }
        }
        for (name, sub) in &subs {
            let name = name.clone();
            let page = Man::new(sub.clone().name(name.clone()));
            let mut part = Vec::new();
            page.render_synopsis_section(&mut part)?;
            // `completions` and `man` read no config: the global options
            // (which clap lists under every command) mean nothing there.
            if !matches!(sub.get_name(), "completions" | "man") {
                page.render_options_section(&mut part)?;
            }
            out.extend_from_slice(format!(".SS \"{name}\"\n").as_bytes());
            if let Some(about) = sub.get_about() {
                out.extend_from_slice(
                    format!("{}\n.PP\n", roff_text(&about.to_string())).as_bytes(),
                );
            }
            // The sections become paragraphs of this command's subsection.
            for line in String::from_utf8_lossy(&part).lines() {
                match line {
                    ".SH SYNOPSIS" => {}
                    ".SH OPTIONS" => out.extend_from_slice(b".PP\nOptions:\n"),
                    l => {
                        out.extend_from_slice(l.as_bytes());
                        out.push(b'\n');
                    }
                }
            }
        }
        out.extend_from_slice(
            b".SH \"EXIT STATUS\"\n\
              Of once and audit:\n\
              .TP\n0\npass completed; every purge or invalidation that was due succeeded (or would, in a dry run)\n\
              .TP\n1\npass completed, but at least one API call failed (it is retried next pass), or not all of the pass could be recorded\n\
              .TP\n2\nusage or configuration error: nothing was probed and nothing purged\n\
              .TP\n3\na safety guard withheld purges or invalidations (max_purge_fraction, max_invalidate_fraction, inconclusive, canary)\n\
              .TP\n70\ninternal error (a bug, such as a panic): reported as such, never as a failed purge\n\
              .PP\nrun exits 0 after a clean shutdown on SIGTERM/SIGINT, 1 when \\-\\-shutdown\\-timeout ran out, \
              2 on a configuration error at start.\n",
        );
        top.render_version_section(&mut out)
    })();
    rendered.expect("rendering to memory cannot fail");
    out
}

/// Text for a roff line: backslashes, hyphens and a leading dot escaped.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// `check`: what would run, with no network.
pub fn print_plan(config: &Config, out: &mut dyn Write) {
    let now = Utc::now();
    let _ = writeln!(out, "config ok: {} watch(es)", config.watches().len());
    if let Some(shard) = config.shard() {
        let _ = writeln!(
            out,
            "shard: {shard} (sources whose probe URL hashes to {} mod {})",
            shard.index, shard.count
        );
    }
    let _ = writeln!(out, "state: {}", for_stdout(&config.state().to_string()));
    let token = match config.vercel().token_from_env() {
        Ok(_) => "set".to_owned(),
        Err(_) => "not set (needed by once and run without --dry-run)".to_owned(),
    };
    let _ = writeln!(
        out,
        "vercel: {} (token from {}: {token})",
        for_stdout(config.vercel().api_base().as_str().trim_end_matches('/')),
        for_stdout(config.vercel().token_env())
    );
    for w in config.watches() {
        let r = &w.rules;
        let _ = writeln!(
            out,
            "watch {}: project {}{}{}, {} image{} ({} probe URL{}{}), schedule {:?} (UTC)",
            for_stdout(&w.name),
            for_stdout(&w.project),
            w.team_id
                .as_ref()
                .map(|t| format!(", team {}", for_stdout(t)))
                .unwrap_or_default(),
            w.slug
                .as_ref()
                .map(|s| format!(", slug {}", for_stdout(s)))
                .unwrap_or_default(),
            w.sources().len(),
            if w.sources().len() == 1 { "" } else { "s" },
            w.probes().len(),
            if w.probes().len() == 1 { "" } else { "s" },
            if w.duplicates() > 0 {
                format!(", {} duplicates ignored", w.duplicates())
            } else {
                String::new()
            },
            r.schedule.expression(),
        );
        let next: Vec<String> = r
            .schedule
            .upcoming(now, 3)
            .iter()
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .collect();
        let _ = writeln!(out, "  next fires: {}", next.join(", "));
        let min_gone_for = if r.min_gone_for.is_zero() {
            String::new()
        } else {
            format!(" and for at least {} (min_gone_for)", span(r.min_gone_for))
        };
        let _ = writeln!(
            out,
            "  on_change: {}{}",
            r.on_change.as_str(),
            match r.on_change {
                crate::config::OnChange::Ignore =>
                    " (a replaced image's new validators are recorded; nothing is called)",
                crate::config::OnChange::Invalidate =>
                    " (a replaced image is invalidated once its new ETag or length is seen on `confirmations` consecutive passes)",
            }
        );
        let _ = writeln!(
            out,
            "  gone: {:?} on {} consecutive pass{}{min_gone_for}; guards: canary {}, max_purges_per_pass {}",
            r.gone_statuses,
            r.confirmations,
            if r.confirmations == 1 { "" } else { "es" },
            for_stdout(w.canary.as_deref().unwrap_or("none")),
            r.max_purges_per_pass,
        );
        let window = format!(
            "due or purged in the last {} (guard_window)",
            span(r.guard_window)
        );
        for (key, fraction, of, noun) in [
            (
                "max_purge_fraction",
                r.max_purge_fraction,
                w.sources().len(),
                format!("sources {window}"),
            ),
            (
                "max_invalidate_fraction",
                r.max_invalidate_fraction,
                w.sources().len(),
                format!(
                    "sources invalidated or due for invalidation in the last {} (guard_window)",
                    span(r.guard_window)
                ),
            ),
            (
                "max_inconclusive_fraction",
                r.max_inconclusive_fraction,
                w.probes().len(),
                "probe URLs inconclusive in one pass".to_owned(),
            ),
        ] {
            let _ = writeln!(
                out,
                "  {}",
                fraction_rule(key, fraction, of, &noun, r.fraction_floor)
            );
        }
        if let Some(d) = &w.discover {
            let list = |urls: &[url::Url]| {
                urls.iter()
                    .map(url::Url::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "  discover: site {}, sitemaps [{}], pages [{}], follow_links {}, max_pages {}, every {}{}",
                d.site,
                list(&d.sitemaps),
                list(&d.pages),
                d.follow_links,
                d.max_pages,
                humantime::format_duration(d.every),
                d.images_url
                    .as_ref()
                    .map(|u| format!(", images_url {u}"))
                    .unwrap_or_default(),
            );
        }
        // A small watch, the default fraction and no floor: not even one
        // purge passes.
        let one_allowed =
            crate::guard::limit(r.max_purge_fraction, w.sources().len(), r.fraction_floor) >= 1;
        if !w.sources().is_empty() && !one_allowed {
            let _ = writeln!(
                out,
                "  warning: with {} sources, max_purge_fraction {} and fraction_floor {} withhold every purge (even one gone source is more than that share); raise fraction_floor or max_purge_fraction for this watch",
                w.sources().len(),
                r.max_purge_fraction,
                r.fraction_floor,
            );
        }
    }
}

/// One fraction guard's rule for `check`, in this watch's numbers: a guard
/// trips only above both `fraction * of` and `floor`.
fn fraction_rule(key: &str, fraction: f64, of: usize, noun: &str, floor: usize) -> String {
    let limit = crate::guard::limit(fraction, of, floor);
    if fraction >= 1.0 {
        format!("{key} {fraction}: off")
    } else if limit >= of {
        format!(
            "{key} {fraction}: never trips in this watch ({of} {}, fraction_floor {floor})",
            // "3 sources", "3 probe URLs".
            if noun.starts_with("probe URLs") {
                "probe URLs"
            } else {
                noun.split(' ').next().unwrap_or(noun)
            }
        )
    } else {
        let why = if limit == floor && floor > crate::guard::max_due(fraction, of) {
            format!(
                "fraction_floor {floor}, as {fraction} x {of} is {}",
                (fraction * of as f64 * 100.0).round() / 100.0
            )
        } else {
            format!("{fraction} x {of}; fraction_floor is {floor}")
        };
        format!("{key} {fraction}: trips when more than {limit} of {of} {noun} ({why})")
    }
}

/// A duration as the config would spell it: `24h` rather than `1day`.
fn span(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(3600) && d.subsec_nanos() == 0 {
        format!("{}h", s / 3600)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// `state show`, `state forget`, `state ledger`: JSON Lines on stdout.
async fn state_command(
    config: &Config,
    global: &Global,
    cmd: StateCommand,
) -> Result<Exit, AppError> {
    let access = match cmd {
        StateCommand::Forget { .. } => Access::Write,
        _ => Access::Read,
    };
    let store = store::open(config.state(), config.legacy_state(), access)
        .await
        .map_err(AppError::StateOpen)?;
    // Gathered first: the stdout lock cannot be held across an await.
    let mut out: Vec<u8> = Vec::new();
    match cmd {
        StateCommand::Show { srcs } => {
            let watches: Vec<&str> = global.watches.iter().map(String::as_str).collect();
            for row in store.show(None, &srcs).await.map_err(AppError::Store)? {
                if watches.is_empty() || watches.contains(&row.watch.as_str()) {
                    json_line(&mut out, &row);
                }
            }
        }
        StateCommand::Forget { srcs } => {
            let [watch] = global.watches.as_slice() else {
                return Err(AppError::Usage(
                    "state forget: name the watch with exactly one --watch".into(),
                ));
            };
            let n = store.forget(watch, &srcs).await.map_err(AppError::Store)?;
            tracing::info!(watch = %watch, asked = srcs.len(), removed = n, "sources forgotten");
            let _ = writeln!(
                out,
                "forgot {n} of {} source(s) in watch {watch}",
                srcs.len()
            );
        }
        StateCommand::Ledger { since } => {
            let since = since.map(|d| {
                store::millis(Utc::now()) - i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
            });
            for call in store.ledger(since).await.map_err(AppError::Store)? {
                json_line(&mut out, &call);
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&out);
    let _ = stdout.flush();
    Ok(Exit::Ok)
}

fn json_line(out: &mut dyn Write, value: &impl serde::Serialize) {
    if serde_json::to_writer(&mut *out, value).is_ok() {
        let _ = out.write_all(b"\n");
    }
}

/// `explain SRC`: the source's story, oldest first, for each watch that knows it.
async fn explain(config: &Config, global: &Global, args: &ExplainArgs) -> Result<Exit, AppError> {
    let store = store::open(config.state(), config.legacy_state(), Access::Read)
        .await
        .map_err(AppError::StateOpen)?;
    let text = explain_text(&*store, &global.watches, &args.src)
        .await
        .map_err(AppError::Store)?;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    Ok(Exit::Ok)
}

/// The words `explain` prints.
pub async fn explain_text(
    store: &dyn Store,
    watches: &[String],
    src: &str,
) -> Result<String, StoreError> {
    let rows: Vec<_> = store
        .show(None, &[src.to_owned()])
        .await?
        .into_iter()
        .filter(|r| watches.is_empty() || watches.contains(&r.watch))
        .collect();
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str(&format!(
            "{src}: not in the inventory{}\n",
            if watches.is_empty() {
                String::new()
            } else {
                format!(" of watch {}", watches.join(", "))
            }
        ));
    }
    for row in &rows {
        out.push_str(&format!(
            "{src} in watch {}: first seen {}{}; probed at {}\n",
            row.watch,
            row.first_seen,
            row.seen_in
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default(),
            if row.probe.is_empty() {
                "(not probed yet)"
            } else {
                &row.probe
            }
        ));
        for h in store.history(&row.watch, src).await? {
            let status = h.status.map(|s| format!(" ({s})")).unwrap_or_default();
            out.push_str(&format!(
                "  {} {}{status}: {}\n",
                h.time,
                h.decision.as_str(),
                h.reason
            ));
        }
        let now = match (row.last_verdict, row.purged) {
            (Some(v), true) => format!(
                "{}, purged at {} in this gone episode",
                v.as_str(),
                row.purged_at.as_deref().unwrap_or("?")
            ),
            (Some(v), false) => v.as_str().to_owned(),
            (None, _) => "not probed yet".to_owned(),
        };
        out.push_str(&format!(
            "  now: {now}{}\n",
            if row.referenced {
                String::new()
            } else {
                format!(
                    "; no longer referenced (since {})",
                    row.unreferenced_since.as_deref().unwrap_or("?")
                )
            }
        ));
    }
    let calls = store.calls_for(src).await?;
    if !calls.is_empty() {
        out.push_str("API calls naming it:\n");
    }
    for c in calls {
        out.push_str(&format!(
            "  {} {} for project {}{}: {} (call {}, {} attempt{}){}\n",
            c.time,
            c.endpoint.as_str(),
            c.project,
            c.team_id
                .as_deref()
                .map(|t| format!(" team {t}"))
                .unwrap_or_default(),
            c.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "no answer".into()),
            c.vercel_id
                .as_deref()
                .map(|v| format!("x-vercel-id {v}"))
                .unwrap_or_else(|| "no x-vercel-id".into()),
            c.attempts,
            if c.attempts == 1 { "" } else { "s" },
            c.error
                .as_deref()
                .map(|e| format!("; {e}"))
                .unwrap_or_default(),
        ));
    }
    Ok(out)
}
