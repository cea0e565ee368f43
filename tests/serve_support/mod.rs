//! Test support for `serve`: the real server on 127.0.0.1:0 and a real box streaming to it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use airsync_streamer::server::{self, ServeConfig, ServeError, ServeStatus};

use crate::common::{box_config, loopback_ice, RunningBox};

pub struct RunningServer {
    pub viewer_url: String,
    pub box_url: String,
    pub status: Arc<ServeStatus>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
}

/// `serve` on 127.0.0.1:0 with its answerer's ICE pinned to loopback.
pub async fn start_serve() -> RunningServer {
    start_serve_with(|_| {}).await
}

pub async fn start_serve_with(tweak: impl FnOnce(&mut ServeConfig)) -> RunningServer {
    let mut cfg = ServeConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.ice = loopback_ice();
    tweak(&mut cfg);
    let server = server::bind(cfg).await.expect("serve binds");
    let shutdown = CancellationToken::new();
    RunningServer {
        viewer_url: server.viewer_url(),
        box_url: server.box_url(),
        status: server.status(),
        task: tokio::spawn(server.run(shutdown.clone())),
        shutdown,
    }
}

impl RunningServer {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve stops promptly")
            .unwrap()
            .expect("serve ran without error");
    }
}

/// A box streaming pipelines/test.pipeline to `url`, ICE on loopback.
pub fn start_box(url: &str) -> RunningBox {
    RunningBox::start(box_config(url))
}
