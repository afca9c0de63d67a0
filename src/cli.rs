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
#[derive(Debug, Clone, Args)]
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
    /// Validate the config and print the plan (images per watch, next fire times); no network unless --online
    Check(CheckArgs),
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
pub struct CheckArgs {
    /// Also verify, with read-only API calls, that the token is valid and each watch's project exists under its team; exit 1 on any problem
    #[arg(long)]
    pub online: bool,
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

    /// Serve `GET /healthz` and `GET /metrics` (Prometheus text) on this address (HOST:PORT; HOST may be a name such as localhost)
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<String>,

    /// On SIGTERM/SIGINT, how long to wait for in-flight work before exiting anyway
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

/// The global options `completions` and `man` ignore (they read no config).
const IGNORED_BY_GENERATORS: [&str; 6] = [
    "config",
    "state",
    "watches",
    "shard",
    "shards",
    "log_format",
];

/// The command line as parsed: [`Cli`]'s definition with the global
/// options hidden from `completions --help` and `man --help`, which ignore
/// them (they still parse there, as clap propagates them).
pub fn command() -> clap::Command {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    for sub in ["completions", "man"] {
        cmd = cmd.mut_subcommand(sub, |s| {
            s.mut_args(|a| {
                if IGNORED_BY_GENERATORS.contains(&a.get_id().as_str()) {
                    a.hide(true)
                } else {
                    a
                }
            })
        });
    }
    cmd
}

/// Parses the process's arguments with [`command`] (exits on `--help`
/// and on errors, as clap does).
pub fn parse() -> Cli {
    let matches = command().get_matches();
    <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// `HOST:PORT`: an IP address (`[::1]:9191` for IPv6) or a host name
/// (`localhost:9191`), resolved when `run` binds it.
fn parse_listen(s: &str) -> Result<String, String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(s.to_owned());
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT (e.g. 127.0.0.1:9191 or localhost:9191)"))?;
    port.parse::<u16>()
        .map_err(|_| format!("{port:?} is not a port number (0-65535)"))?;
    let name_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !name_ok {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    Ok(s.to_owned())
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

    #[test]
    fn generators_do_not_list_the_options_they_ignore() {
        let mut cmd = command();
        for sub in ["completions", "man"] {
            let help = cmd
                .find_subcommand_mut(sub)
                .expect("subcommand")
                .render_help()
                .to_string();
            assert!(
                !help.contains("--config") && !help.contains("--shard"),
                "{sub}:\n{help}"
            );
        }
        let once = cmd
            .find_subcommand_mut("once")
            .expect("once")
            .render_help()
            .to_string();
        assert!(once.contains("--config"), "{once}");
    }

    #[test]
    fn listen_takes_host_names_and_ip_addresses() {
        for ok in [
            "localhost:9191",
            "127.0.0.1:9191",
            "[::1]:9191",
            "metrics.internal:80",
        ] {
            assert!(
                Cli::try_parse_from(["origin-watch", "run", "--listen", ok]).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "localhost",
            "localhost:http",
            ":9191",
            "a b:1",
            "host:70000",
        ] {
            assert!(
                Cli::try_parse_from(["origin-watch", "run", "--listen", bad]).is_err(),
                "{bad}"
            );
        }
    }
}
