use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::sync::Arc;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use airsync_streamer::config::{Config, StreamArgs};
use airsync_streamer::metrics::Status;
use airsync_streamer::{media, supervisor, systemd};

/// Streams a camera and a microphone to a WebRTC server through GStreamer's webrtcbin.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    stream: StreamArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream to a signalling server (the default when options are given without a command).
    Stream(StreamArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Stream(args)) => args,
        None => cli.stream,
    };
    let cfg = match Config::load(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("airsync-streamer: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&cfg.log_level);
    match run_stream(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

fn run_stream(cfg: Config) -> anyhow::Result<()> {
    media::init().context("initialising GStreamer")?;
    // Fail fast on a description that can never work; faults that may heal are retried.
    media::pipeline::load(&cfg.pipeline.file)
        .with_context(|| format!("checking {}", cfg.pipeline.file.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let status = Arc::new(Status::default());
        let signals = shutdown.clone();
        let mut term = unix_signal(SignalKind::terminate())?;
        let mut int = unix_signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "stopping");
            systemd::stopping();
            signals.cancel();
        });
        let notifier = tokio::spawn(systemd::run(status.clone(), systemd::stall_limit(&cfg)));
        supervisor::run(&cfg, shutdown, status).await;
        let _ = notifier.await;
        anyhow::Ok(())
    });
    // A blocking task stuck in GStreamer must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

fn unix_signal(kind: SignalKind) -> anyhow::Result<Signal> {
    signal(kind).with_context(|| format!("installing a handler for signal {}", kind.as_raw_value()))
}
