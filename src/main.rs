use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gst::prelude::ElementExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use airsync_streamer::config::{Config, FileConfig, IceConfig, StreamArgs};
use airsync_streamer::metrics::Status;
use airsync_streamer::server::{self, ServeConfig};
use airsync_streamer::{logging, media, supervisor, systemd};

/// Streams a camera and a microphone to a WebRTC server through GStreamer's webrtcbin.
/// With no command and no --url or --config, runs `demo`.
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
    /// Run a signalling server for boxes, with a viewer page on the same port.
    Serve(ServeArgs),
    /// `serve` plus a box streaming the test picture (or the camera) to it; prints the URL.
    Demo(DemoArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct ServeArgs {
    /// Address to listen on (HTTP page, /box and /viewer WebSockets).
    #[arg(long, default_value = server::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// PEM certificate chain: serve https/wss instead of http/ws (needs --key).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Address the server's own answering peer gathers ICE candidates on; repeat for several.
    /// Pins ICE to these addresses (needed on loopback-only hosts).
    #[arg(long = "ice-address", value_name = "IP")]
    ice_addresses: Vec<IpAddr>,
    /// Log level or tracing filter.
    #[arg(long, env = "AIRSYNC_LOG", default_value = "info")]
    log_level: String,
}

#[derive(Debug, Clone, clap::Args)]
struct DemoArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Pipeline the demo box streams [default: pipelines/camera.pipeline when /dev/video0
    /// exists, else pipelines/test.pipeline].
    #[arg(short, long)]
    pipeline: Option<PathBuf>,
}

impl Default for DemoArgs {
    fn default() -> Self {
        let cli = Cli::parse_from(["airsync-streamer", "demo"]);
        match cli.command {
            Some(Command::Demo(args)) => args,
            _ => unreachable!("`demo` parses as the demo command"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread or encoder exists, so every mapping is made without huge pages.
    if let Err(e) = airsync_streamer::huge_pages::disable() {
        eprintln!("airsync-streamer: transparent huge pages stay on ({e})");
    }
    let result = match cli.command {
        Some(Command::Stream(args)) => stream(args),
        None if cli.stream.url.is_none() && cli.stream.config.is_none() => demo(DemoArgs {
            pipeline: cli.stream.pipeline,
            ..DemoArgs::default()
        }),
        None => stream(cli.stream),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Demo(args)) => demo(args),
    };
    media::dtls::wait_for_certificate();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("airsync-streamer: configuration error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            tracing::error!("{e:#}");
            eprintln!("airsync-streamer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Config(anyhow::Error),
    Run(anyhow::Error),
}

/// GStreamer first: the logging set-up routes GStreamer's own log into tracing.
fn init_logging(level: &str) -> Result<(), Failure> {
    media::init()
        .context("initialising GStreamer")
        .map_err(Failure::Run)?;
    logging::init(level);
    // Every command runs webrtcbin sessions; their certificate is generated while the
    // command starts up rather than inside the first one.
    media::dtls::prepare_certificate();
    Ok(())
}

/// Cancels the token on SIGTERM (systemd's stop) or SIGINT (Ctrl-C), after `on_stop`.
fn cancel_on_signal(shutdown: &CancellationToken, on_stop: fn()) -> Result<(), Failure> {
    let install = |kind: SignalKind| {
        signal(kind)
            .with_context(|| format!("installing a handler for signal {}", kind.as_raw_value()))
            .map_err(Failure::Run)
    };
    let mut term = install(SignalKind::terminate())?;
    let mut int = install(SignalKind::interrupt())?;
    let signals = shutdown.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "stopping");
        on_stop();
        signals.cancel();
    });
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .map_err(Failure::Run)
}

fn stream(args: StreamArgs) -> Result<(), Failure> {
    let cfg = Config::load(&args).map_err(|e| Failure::Config(e.into()))?;
    init_logging(&cfg.log_level)?;
    // Fail fast on a description that can never work; faults that may heal are retried.
    media::pipeline::load(&cfg.pipeline.file)
        .with_context(|| format!("checking {}", cfg.pipeline.file.display()))
        .map_err(Failure::Run)?;
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let status = Arc::new(Status::default());
        cancel_on_signal(&shutdown, systemd::stopping)?;
        let notifier = tokio::spawn(systemd::run(status.clone(), systemd::stall_limit(&cfg)));
        supervisor::run(&cfg, shutdown, status).await;
        let _ = notifier.await;
        Ok(())
    });
    // A blocking task stuck in GStreamer must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

fn serve_config(args: &ServeArgs, ice_addresses: Vec<IpAddr>) -> ServeConfig {
    let mut cfg = ServeConfig::new(args.listen);
    cfg.tls = args.cert.clone().zip(args.key.clone());
    cfg.ice = IceConfig {
        local_addresses: ice_addresses,
        ..IceConfig::default()
    };
    cfg
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    init_logging(&args.log_level)?;
    let cfg = serve_config(&args, args.ice_addresses.clone());
    runtime()?.block_on(async {
        let shutdown = CancellationToken::new();
        let server = server::bind(cfg)
            .await
            .map_err(|e| Failure::Run(e.into()))?;
        println!(
            "airsync-streamer serve: viewer page {}",
            server.viewer_url()
        );
        println!("boxes connect to {}", server.box_url());
        cancel_on_signal(&shutdown, || {})?;
        server
            .run(shutdown)
            .await
            .map_err(|e| Failure::Run(e.into()))
    })
}

fn demo(args: DemoArgs) -> Result<(), Failure> {
    init_logging(&args.serve.log_level)?;
    // The demo's box, server and (usually) browser are on this one machine, so ICE is pinned
    // to loopback unless told otherwise: it then works on a host with no network at all
    // (libnice skips loopback unless asked, INTEROP.md point 1) and no packet leaves the
    // machine. To watch from another machine, pass --listen 0.0.0.0:8443 and
    // --ice-address with this machine's LAN address.
    let ice_addresses = if args.serve.ice_addresses.is_empty() {
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
    } else {
        args.serve.ice_addresses.clone()
    };
    let pipeline = demo_pipeline(args.pipeline.clone()).map_err(Failure::Config)?;
    let serve_cfg = serve_config(&args.serve, ice_addresses.clone());
    runtime()?.block_on(async {
        let server = server::bind(serve_cfg)
            .await
            .map_err(|e| Failure::Run(e.into()))?;
        let mut box_url = url::Url::parse(&server.box_url()).expect("the server's own URL");
        if server.local_addr().ip().is_unspecified() {
            let _ = box_url.set_ip_host(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let stream_args = StreamArgs {
            url: Some(box_url.to_string()),
            pipeline: Some(pipeline.clone()),
            ice_addresses,
            // A self-signed demo certificate is trusted by the demo's own box.
            ca_file: args.serve.cert.clone(),
            ..StreamArgs::default()
        };
        let box_cfg = Config::build(FileConfig::default(), Path::new("."), &stream_args)
            .map_err(|e| Failure::Config(e.into()))?;
        let mut viewer = url::Url::parse(&server.viewer_url()).expect("the server's own URL");
        if server.local_addr().ip().is_unspecified() {
            let _ = viewer.set_ip_host(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        println!();
        println!("  airsync-streamer demo: streaming {}", pipeline.display());
        println!("  open {viewer} in a browser to watch; Ctrl-C stops");
        println!();
        // Ctrl-C stops the box, and the server once the box is done: stopped together, the
        // box could see its server go first and log a lost session before stopping.
        let stop_box = CancellationToken::new();
        cancel_on_signal(&stop_box, || {})?;
        let stop_server = CancellationToken::new();
        let serving = tokio::spawn(server.run(stop_server.clone()));
        supervisor::run(&box_cfg, stop_box, Arc::new(Status::default())).await;
        stop_server.cancel();
        match serving.await {
            Ok(result) => result.map_err(|e| Failure::Run(e.into())),
            Err(e) => Err(Failure::Run(e.into())),
        }
    })
}

/// Whether the camera pipeline's devices open: they do so on the way to PAUSED, which live
/// sources reach at once (no preroll), so this takes no time when they work.
fn camera_opens(path: &Path) -> bool {
    let Ok(pipeline) = media::pipeline::load(path) else {
        return false;
    };
    let opens = pipeline.set_state(gst::State::Paused).is_ok();
    let _ = pipeline.set_state(gst::State::Null);
    opens
}

/// The demo's pipeline: the one asked for, else the camera's when there is a camera, else the
/// test picture, from the embedded copy when the program runs outside its source tree.
fn demo_pipeline(asked: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = asked {
        anyhow::ensure!(path.is_file(), "pipeline {} does not exist", path.display());
        return Ok(path);
    }
    let camera = Path::new("pipelines/camera.pipeline");
    if Path::new("/dev/video0").exists() && camera.is_file() {
        if camera_opens(camera) {
            return Ok(camera.to_owned());
        }
        eprintln!(
            "airsync-streamer demo: {} does not start here (camera or sound card busy or \
             missing); streaming the test picture instead",
            camera.display()
        );
    }
    let test = Path::new("pipelines/test.pipeline");
    if test.is_file() {
        return Ok(test.to_owned());
    }
    let path = std::env::temp_dir().join(format!("airsync-demo-{}.pipeline", std::process::id()));
    std::fs::write(&path, include_str!("../pipelines/test.pipeline"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_command_and_no_server_means_demo_defaults() {
        let cli = Cli::parse_from(["airsync-streamer"]);
        assert!(cli.command.is_none() && cli.stream.url.is_none());
        let demo = DemoArgs::default();
        assert_eq!(demo.serve.listen, server::DEFAULT_LISTEN.parse().unwrap());
        assert!(demo.serve.cert.is_none() && demo.pipeline.is_none());
    }

    #[test]
    fn serve_and_demo_options_parse() {
        let cli = Cli::parse_from([
            "airsync-streamer",
            "serve",
            "--listen",
            "0.0.0.0:9000",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--ice-address",
            "127.0.0.1",
        ]);
        let Some(Command::Serve(args)) = cli.command else {
            panic!("not serve")
        };
        let cfg = serve_config(&args, args.ice_addresses.clone());
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(
            cfg.tls,
            Some((PathBuf::from("c.pem"), PathBuf::from("k.pem")))
        );
        assert_eq!(cfg.ice.local_addresses.len(), 1);
        assert!(Cli::try_parse_from(["airsync-streamer", "serve", "--cert", "c.pem"]).is_err());
        let cli = Cli::parse_from(["airsync-streamer", "demo", "-p", "pipelines/test.pipeline"]);
        assert!(matches!(
            cli.command,
            Some(Command::Demo(DemoArgs {
                pipeline: Some(_),
                ..
            }))
        ));
    }
}
