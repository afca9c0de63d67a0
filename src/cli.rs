//! The command line: `once`, `audit`, `run`, `check` and `discover`, with the options
//! the contract names.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::shard::Shard;

/// Probes source images at their origin and purges Vercel's image cache for
/// the ones that are gone (404/410 on enough consecutive passes).
#[derive(Debug, Parser)]
#[command(name = "origin-watch", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub global: Global,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Config file
    #[arg(
        short,
        long,
        global = true,
        env = "ORIGIN_WATCH_CONFIG",
        default_value = "watch.yaml",
        value_name = "FILE"
    )]
    pub config: PathBuf,

    /// State store: a SQLite file or a postgres:// URL (overrides `state:` in the config)
    #[arg(long, global = true, value_name = "FILE_OR_URL")]
    pub state: Option<String>,

    /// Only this watch (repeatable)
    #[arg(long = "watch", global = true, value_name = "NAME")]
    pub watches: Vec<String>,

    /// Own only shard K of N of the sources (by a stable hash of the probe URL), e.g. 0/4
    #[arg(
        long,
        global = true,
        env = "ORIGIN_WATCH_SHARD",
        value_name = "K/N",
        conflicts_with = "shards"
    )]
    pub shard: Option<Shard>,

    /// Shard count N, with K taken from JOB_COMPLETION_INDEX (Kubernetes Indexed Job)
    #[arg(long, global = true, value_name = "N")]
    pub shards: Option<u32>,

    /// Log format on stderr [default: pretty on a terminal, json otherwise]
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One pass over every watch, then exit (cron, CI, Kubernetes CronJob)
    Once(PassArgs),
    /// Dry run: probe and decide, never call Vercel, never write state; print what would be purged
    Audit(ReportArgs),
    /// Long-running sidecar: a pass for each watch on its cron schedule until SIGTERM/SIGINT
    Run(RunArgs),
    /// Validate the config and print the plan (images per watch, next fire times); no network
    Check,
    /// The inventory and the ledger: show, forget, ledger
    #[command(subcommand)]
    State(StateCommand),
    /// A source's story in words: when it was seen, gone, purged, and every API call for it
    Explain(ExplainArgs),
    /// Find each watch's sources on its site (sitemaps, pages, images_url) and print them as JSON Lines (watch, src, found_on); probes nothing, writes no state, needs no token. Exits 1 when a discovery was partial
    Discover,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    Man,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// The inventory as JSON Lines, one object per source (filtered by --watch and SRC)
    Show {
        /// Only these sources
        #[arg(value_name = "SRC")]
        srcs: Vec<String>,
    },
    /// Remove sources from a watch's inventory (needs the writer lock; one --watch)
    Forget {
        /// The sources to remove
        #[arg(value_name = "SRC", required = true)]
        srcs: Vec<String>,
    },
    /// Every API call made, as JSON Lines, oldest first
    Ledger {
        /// Only calls this recent (e.g. 24h, 7d)
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Option<Duration>,
    },
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The source, exactly as configured or discovered
    #[arg(value_name = "SRC")]
    pub src: String,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Write one JSON object per image per pass (JSON Lines); `-` = stdout
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PassArgs {
    /// Decide but never call Vercel and never write state (state is read)
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub report: ReportArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub pass: PassArgs,

    /// Serve `GET /healthz` and `GET /metrics` (Prometheus text) on this address
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// On SIGTERM/SIGINT, how long to wait for in-flight work before exiting anyway
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let a = Cli::try_parse_from(["origin-watch", "-c", "x.yaml", "once", "--dry-run"]).unwrap();
        let b = Cli::try_parse_from(["origin-watch", "once", "--dry-run", "--config", "x.yaml"])
            .unwrap();
        assert_eq!(a.global.config, b.global.config);
        assert!(matches!(
            a.command,
            Command::Once(PassArgs { dry_run: true, .. })
        ));
    }

    #[test]
    fn listen_is_only_for_run() {
        assert!(Cli::try_parse_from(["origin-watch", "once", "--listen", "127.0.0.1:9"]).is_err());
        assert!(Cli::try_parse_from(["origin-watch", "run", "--listen", "127.0.0.1:9"]).is_ok());
    }
}
