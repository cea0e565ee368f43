use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use airsync_streamer::config::{Config, StreamArgs};
use airsync_streamer::metrics::Status;
use airsync_streamer::{logging, media, supervisor};

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
    if let Err(e) = media::init() {
        eprintln!("airsync-streamer: {e}");
        return ExitCode::FAILURE;
    }
    logging::init(&cfg.log_level);
    match run_stream(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_stream(cfg: Config) -> anyhow::Result<()> {
    // Fail fast on a description that can never work; faults that may heal are retried.
    media::pipeline::load(&cfg.pipeline.file)
        .with_context(|| format!("checking {}", cfg.pipeline.file.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let status = Arc::new(Status::default());
        let signals = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("stopping");
            signals.cancel();
        });
        supervisor::run(&cfg, shutdown, status).await;
    });
    Ok(())
}
