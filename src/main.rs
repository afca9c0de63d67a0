#![forbid(unsafe_code)]
//! The `origin-watch` binary: parses the command line, installs logging on
//! stderr, wires SIGINT/SIGTERM to one cancellation token, runs the command
//! and maps its outcome to the contract's exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use origin_watch::app;
use origin_watch::cli::LogFormat;
use origin_watch::exit::{self, Exit};
use origin_watch::logsink::{BufferedSink, FlushGuard};
use origin_watch::progress::StderrAboveBar;
use origin_watch::redact;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = origin_watch::cli::parse();
    // Logs go through a buffer flushed every 100 ms that never drops a
    // line; the guard flushes it when main returns.
    let (log_format, log_guard) = install_tracing(cli.global.log_format);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(&format!(
                "internal error: cannot start the async runtime: {e}"
            ));
            return Exit::Internal.into();
        }
    };
    let exit = runtime.block_on(async {
        let cancel = CancellationToken::new();
        let signalled = cancel.clone();
        tokio::spawn(cancel_on_signal(cancel.clone()));
        // On a worker thread, the pass and its connections share a scheduler
        // instead of waking the main thread for every answer.
        let (command, global) = (cli.command, cli.global);
        let work = tokio::spawn(async move { app::execute(command, &global, cancel).await });
        let result = match work.await {
            Ok(result) => result,
            // A panic is a bug, not a failed purge; the panic hook has
            // printed where it happened.
            Err(e) => {
                let why = match e.try_into_panic() {
                    Ok(panic) => format!("the command panicked: {}", exit::panic_message(&*panic)),
                    Err(e) => e.to_string(),
                };
                if log_format == LogFormat::Json {
                    tracing::error!(error = %redact::text(&why), "origin-watch failed: internal error");
                }
                say(&format!("internal error: {why}"));
                return Exit::Internal;
            }
        };
        match result {
            Ok(exit) => {
                // The last line after SIGTERM/SIGINT says the process ended
                // and how, so a log collector sees a clean stop.
                if signalled.is_cancelled() {
                    tracing::info!(exit = exit.code(), "stopped after the signal; state saved");
                }
                exit
            }
            Err(e) => {
                let exit = e.exit();
                let e = anyhow::Error::new(e);
                // Log collectors read the JSON event; people read the plain line.
                if log_format == LogFormat::Json {
                    tracing::error!(error = format!("{e:#}"), "origin-watch failed");
                }
                let e_text = format!("{e:#}");
                say(&e_text);
                exit
            }
        }
    });
    // Passes may leave idle connections behind; do not wait for them.
    runtime.shutdown_background();
    // A log that could not be written is a failure, not a silence.
    if !log_guard.finish() {
        say("the log could not be written to stderr (disk full or closed)");
        return Exit::PurgeFailed.max(exit).into();
    }
    exit.into()
}

/// The error line on stderr, secrets masked. `eprintln!` would panic when
/// stderr itself cannot be written; this says what it can.
fn say(message: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "origin-watch: error: {}",
        redact::text(message)
    );
}

fn install_tracing(format: Option<LogFormat>) -> (LogFormat, FlushGuard<StderrAboveBar>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let (writer, guard) = BufferedSink::new(StderrAboveBar);
    writer.flush_on_demand();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    (format, guard)
}

/// Cancels `token` on the first SIGINT or SIGTERM.
async fn cancel_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    token.cancel();
}
