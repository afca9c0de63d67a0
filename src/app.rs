//! The commands, wired from the modules: `check` prints the plan, `once`
//! and `audit` run one pass, `run` hands over to the sidecar loop. `main`
//! only parses the command line, installs logging and signals, and maps the
//! result to an exit code.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;

use crate::cli::{Command, Global, PassArgs, ReportArgs};
use crate::config::{Config, ConfigError};
use crate::exit::Exit;
use crate::pass::{PassContext, PassOutcome, run_pass};
use crate::probe::Prober;
use crate::report::Reporter;
use crate::shard::Shard;
use crate::state::{StateError, StateStore};
use crate::vercel::VercelClient;

/// A failure of the watcher itself.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state file could not be opened: nothing was probed.
    #[error(transparent)]
    StateOpen(StateError),
    /// The pass ran but its state could not be saved.
    #[error(transparent)]
    StateSave(StateError),
    #[error("cannot open report file {path}: {source}")]
    Report {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot serve --listen {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

impl AppError {
    pub fn exit(&self) -> Exit {
        match self {
            AppError::Config(_)
            | AppError::StateOpen(_)
            | AppError::Report { .. }
            | AppError::Listen { .. } => Exit::Usage,
            AppError::StateSave(_) | AppError::Http(_) => Exit::PurgeFailed,
        }
    }
}

/// Loads the config named on the command line and applies `--state` and `--watch`.
pub fn load_config(global: &Global) -> Result<Config, ConfigError> {
    let mut config = Config::load(&global.config)?;
    if let Some(state) = &global.state {
        config.state_path = state.clone();
    }
    config.select(&global.watches)?;
    let shard = match (global.shard, global.shards) {
        (Some(shard), _) => Some(shard),
        (None, Some(n)) => Some(
            Shard::from_job_index(n, std::env::var("JOB_COMPLETION_INDEX").ok().as_deref())
                .map_err(|problem| ConfigError::Invalid {
                    origin: "command line".into(),
                    problems: vec![format!("--shards {n}: {problem}")],
                })?,
        ),
        (None, None) => None,
    };
    if let Some(shard) = shard {
        config.apply_shard(shard);
    }
    Ok(config)
}

/// Runs a command to its end.
pub async fn execute(
    command: Command,
    global: &Global,
    cancel: CancellationToken,
) -> Result<Exit, AppError> {
    let config = load_config(global)?;
    match command {
        Command::Check => {
            print_plan(&config, &mut std::io::stdout().lock());
            Ok(Exit::Ok)
        }
        Command::Once(args) => {
            let ctx = context(&config, &args)?;
            let outcome = run_pass(&ctx, &config.watches, &cancel)
                .await
                .map_err(AppError::StateSave)?;
            print_outcome(&outcome);
            Ok(outcome.exit())
        }
        Command::Audit(report) => {
            let args = PassArgs {
                dry_run: true,
                report,
            };
            let ctx = context(&config, &args)?;
            let outcome = run_pass(&ctx, &config.watches, &cancel)
                .await
                .map_err(AppError::StateSave)?;
            print_outcome(&outcome);
            Ok(outcome.exit())
        }
        Command::Run(args) => crate::sidecar::sidecar(config, global, args, cancel).await,
    }
}

/// Builds what a pass needs. Without `--dry-run` this needs the token and
/// takes the state lock; with it, neither.
pub fn context(config: &Config, args: &PassArgs) -> Result<PassContext, AppError> {
    let vercel = if args.dry_run {
        None
    } else {
        let token = config.vercel.token_from_env()?;
        Some(Arc::new(VercelClient::new(&config.vercel, token)?))
    };
    let state = if args.dry_run {
        StateStore::open_read_only(&config.state_path)
    } else {
        StateStore::open(&config.state_path)
    }
    .map_err(AppError::StateOpen)?;
    Ok(PassContext {
        prober: Arc::new(Prober::new()?),
        vercel,
        state: Arc::new(state),
        reporter: Arc::new(reporter(&args.report)?),
        observer: None,
    })
}

pub fn reporter(args: &ReportArgs) -> Result<Reporter, AppError> {
    match &args.report {
        None => Ok(Reporter::log_only()),
        Some(path) => Reporter::to_path(path).map_err(|source| AppError::Report {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// The human summary on stdout.
pub fn print_outcome(outcome: &PassOutcome) {
    let mut out = std::io::stdout().lock();
    for w in &outcome.watches {
        let _ = writeln!(out, "{w}");
    }
    let _ = out.flush();
}

/// `check`: what would run, with no network.
pub fn print_plan(config: &Config, out: &mut dyn Write) {
    let now = Utc::now();
    let _ = writeln!(out, "config ok: {} watch(es)", config.watches.len());
    if let Some(shard) = config.shard {
        let _ = writeln!(
            out,
            "shard: {shard} (sources whose probe URL hashes to {} mod {})",
            shard.index, shard.count
        );
    }
    let _ = writeln!(out, "state: {}", display(&config.state_path));
    let token = match config.vercel.token_from_env() {
        Ok(_) => "set".to_owned(),
        Err(_) => "not set (needed by once and run without --dry-run)".to_owned(),
    };
    let _ = writeln!(
        out,
        "vercel: {} (token from {}: {token})",
        config.vercel.api_base, config.vercel.token_env
    );
    for w in &config.watches {
        let r = &w.rules;
        let _ = writeln!(
            out,
            "watch {}: project {}{}{}, {} images ({} probe URLs{}), schedule {:?} (UTC)",
            w.name,
            w.project,
            w.team_id
                .as_ref()
                .map(|t| format!(", team {t}"))
                .unwrap_or_default(),
            w.slug
                .as_ref()
                .map(|s| format!(", slug {s}"))
                .unwrap_or_default(),
            w.sources.len(),
            w.probes.len(),
            if w.duplicates > 0 {
                format!(", {} duplicates ignored", w.duplicates)
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
        let _ = writeln!(
            out,
            "  gone: {:?} on {} consecutive passes; guards: max_purge_fraction {}, max_purges_per_pass {}, canary {}",
            r.gone_statuses,
            r.confirmations,
            r.max_purge_fraction,
            r.max_purges_per_pass,
            w.canary.as_deref().unwrap_or("none"),
        );
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
