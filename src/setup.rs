//! What every command that runs passes needs, shared by `once`/`audit`
//! (`app`) and `run` (`sidecar`): the config as the command line amends it,
//! the pass context (clients, store, reporter), the webhook, the summary
//! printed, and the error type of a command. Kept apart from both so that
//! neither imports the other's internals.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::cli::{Global, PassArgs, ReportArgs};
use crate::config::{Config, ConfigError};
use crate::exit::Exit;
use crate::pass::{PassContext, PassOutcome};
use crate::probe::Prober;
use crate::redact::for_stdout;
use crate::report::Reporter;
use crate::shard::Shard;
use crate::store::{self, Access, StoreError};
use crate::tls::ClientError;
use crate::vercel::VercelClient;

/// A failure of the watcher itself.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened: nothing was probed.
    #[error(transparent)]
    StateOpen(StoreError),
    /// The pass ran but what it did could not all be recorded.
    #[error("the pass ran, but its state could not be recorded: {0}")]
    StateSave(StoreError),
    /// A `state` or `explain` command could not read or write the store.
    #[error(transparent)]
    Store(StoreError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot open report file {path}: {cause}")]
    Report { path: String, cause: std::io::Error },
    /// The pass ran, but its report is incomplete (a full disk).
    #[error("cannot write report file {path}: {cause}; the log has every decision")]
    ReportWrite { path: String, cause: std::io::Error },
    #[error("cannot write the summary to stdout: {0}")]
    Stdout(std::io::Error),
    /// An HTTP client could not be built: `which` names it (probe,
    /// discovery, API, webhook).
    #[error("cannot build the {which} client")]
    Client {
        which: &'static str,
        #[source]
        cause: ClientError,
    },
    #[error("cannot serve --listen {addr}: {cause}")]
    Listen { addr: String, cause: std::io::Error },
}

impl AppError {
    /// For `map_err`: a client named `which` could not be built.
    pub fn client(which: &'static str) -> impl Fn(ClientError) -> AppError {
        move |cause| AppError::Client { which, cause }
    }

    pub fn exit(&self) -> Exit {
        match self {
            AppError::Config(_)
            | AppError::StateOpen(_)
            | AppError::Report { .. }
            | AppError::Listen { .. }
            | AppError::Usage(_) => Exit::Usage,
            // The config and the roots were checked: a client that cannot
            // be built after that is the watcher's own failure.
            AppError::Client { .. } => Exit::Internal,
            AppError::StateSave(_)
            | AppError::Store(_)
            | AppError::ReportWrite { .. }
            | AppError::Stdout(_) => Exit::PurgeFailed,
        }
    }
}

/// Loads the config named on the command line and applies `--state` and `--watch`.
pub fn load_config(global: &Global) -> Result<Config, ConfigError> {
    let mut config = Config::load(&global.config)?;
    if let Some(state) = &global.state {
        config.override_state(
            crate::store::StateLocation::parse(state, Path::new("")).map_err(|problem| {
                ConfigError::Invalid {
                    origin: "command line".into(),
                    problems: vec![format!("--state: {problem}")],
                }
            })?,
        );
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

/// The report's first write error, if any, as the command's error.
pub fn report_written(ctx: &PassContext, args: &ReportArgs) -> Result<(), AppError> {
    ctx.reporter
        .finish()
        .map_err(|cause| AppError::ReportWrite {
            path: args
                .report
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            cause,
        })
}

/// Builds what a pass needs. Without `--dry-run` this needs the token and
/// takes the store's writer lock; with it, neither.
pub async fn context(config: &Config, args: &PassArgs) -> Result<PassContext, AppError> {
    let vercel = if args.dry_run {
        None
    } else {
        let token = config.vercel().token_from_env()?;
        Some(Arc::new(
            VercelClient::trusting(config.vercel(), token, config.trust())
                .map_err(AppError::client("API"))?,
        ))
    };
    let access = if args.dry_run {
        Access::DryRun
    } else {
        Access::Write
    };
    let store = store::open(config.state(), config.legacy_state(), access)
        .await
        .map_err(AppError::StateOpen)?;
    Ok(PassContext {
        prober: Arc::new(Prober::trusting(config.trust()).map_err(AppError::client("probe"))?),
        vercel,
        store,
        reporter: Arc::new(reporter(&args.report)?),
        observer: None,
    })
}

/// The webhook of `notify:`, for a pass that may call Vercel (a dry run
/// tells no one).
pub fn notifier(
    config: &Config,
    args: &PassArgs,
) -> Result<Option<crate::notify::Notifier>, AppError> {
    match config.notify() {
        Some(n) if !args.dry_run => crate::notify::Notifier::new(n.clone(), config.trust())
            .map(Some)
            .map_err(AppError::client("webhook")),
        _ => Ok(None),
    }
}

pub fn reporter(args: &ReportArgs) -> Result<Reporter, AppError> {
    match &args.report {
        None => Ok(Reporter::log_only()),
        Some(path) => Reporter::to_path(path).map_err(|cause| AppError::Report {
            path: path.display().to_string(),
            cause,
        }),
    }
}

/// The summary: one `pass summary` log event per watch (counts as
/// fields), then the human line on stdout (control characters escaped by
/// its `Display`), after the pass's buffered log lines, so on a terminal it
/// comes last.
pub fn print_outcome(outcome: &PassOutcome) -> std::io::Result<()> {
    for w in &outcome.watches {
        w.log();
    }
    crate::logsink::flush_now();
    let mut out = std::io::stdout().lock();
    for w in &outcome.watches {
        writeln!(out, "{w}")?;
    }
    if let Some(e) = &outcome.store_error {
        writeln!(
            out,
            "state: not all of this pass could be recorded: {}",
            for_stdout(e)
        )?;
    }
    out.flush()
}
