//! No leaks (issue 4, point 4): 200 consecutive sessions in one process, the server dropping
//! the socket after each offer, must leave memory and thread counts flat. Prints RSS and
//! thread count after sessions 1, 50 and 200. About 10 s on two cores, so it is part of the
//! default run; to see the figures:
//!
//!     cargo test --test soak -- --nocapture

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use airsync_streamer::metrics::{Counters, Status};
use airsync_streamer::supervisor;
use tokio_util::sync::CancellationToken;

use common::fault_server::FaultServer;
use common::*;

const SESSIONS: u64 = 200;
const CHECKPOINTS: [u64; 3] = [1, 50, 200];

/// `(VmRSS in KiB, Threads)` of this process, from /proc/self/status.
fn rss_and_threads() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_leave_memory_and_threads_flat() {
    init_tracing();
    let mut server = FaultServer::start().await;
    let mut cfg = box_config(&server.url());
    cfg.reconnect.initial = Duration::from_millis(10);
    cfg.reconnect.max = Duration::from_millis(10);
    let status = Arc::new(Status::default());
    let shutdown = CancellationToken::new();
    let task = {
        let (status, shutdown) = (status.clone(), shutdown.clone());
        tokio::spawn(async move { supervisor::run(&cfg, shutdown, status).await })
    };
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for n in 1..=SESSIONS {
        let mut conn = server.next_conn(Duration::from_secs(20)).await;
        let offer = conn.offer(Duration::from_secs(20)).await;
        assert!(ids.insert(offer.session_id), "sessionId reused");
        conn.drop_socket();
        if CHECKPOINTS.contains(&n) {
            let ended = wait_for(Duration::from_secs(10), || {
                Counters::get(&status.counters.sessions_failed) >= n
            })
            .await;
            assert!(ended, "session {n} did not end");
            // Let the finished session's pipeline be freed before measuring.
            wait_for(Duration::from_secs(2), || {
                status.pipelines_alive.get() <= 1 && status.pipelines_running.get() <= 1
            })
            .await;
            let (rss, threads) = rss_and_threads();
            println!(
                "after session {n:>3}: RSS {rss:>7} KiB, threads {threads:>3}, pipelines alive {}, elapsed {:?}",
                status.pipelines_alive.get(),
                started.elapsed()
            );
            seen.push((n, rss, threads));
        }
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .unwrap();
    assert_eq!(status.pipelines_running.get(), 0);
    let freed = wait_for(Duration::from_secs(5), || status.pipelines_alive.get() == 0).await;
    assert!(
        freed,
        "{} pipelines never freed",
        status.pipelines_alive.get()
    );
    let (_, rss50, threads50) = seen[1];
    let (_, rss200, threads200) = seen[2];
    // Flat: the last 150 sessions may not add a thread each, nor grow memory steadily.
    assert!(
        threads200 <= threads50 + 4,
        "threads grew: {threads50} -> {threads200}"
    );
    assert!(
        rss200 <= rss50 + rss50 / 4,
        "RSS grew by over 25 % between sessions 50 and 200: {rss50} -> {rss200} KiB"
    );
}

/// A server that restarts every few seconds: each time the box streams again with a new
/// sessionId. 4 cycles by default; `AIRSYNC_RESTART_CYCLES=60` runs it for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_server_restarting_every_few_seconds() {
    init_tracing();
    let cycles: u32 = std::env::var("AIRSYNC_RESTART_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut server = FaultServer::start().await;
    let addr = server.addr;
    let cfg = box_config(&server.url());
    let status = Arc::new(Status::default());
    let shutdown = CancellationToken::new();
    let task = {
        let (status, shutdown) = (status.clone(), shutdown.clone());
        tokio::spawn(async move { supervisor::run(&cfg, shutdown, status).await })
    };
    let mut ids = std::collections::HashSet::new();
    let mut bridges = Vec::new();
    for cycle in 1..=cycles {
        let up = Instant::now();
        let mut conn = server.next_conn(Duration::from_secs(20)).await;
        let offer = conn.offer(Duration::from_secs(20)).await;
        assert!(ids.insert(offer.session_id.clone()), "sessionId reused");
        let bridge = conn.bridge(&loopback_ice());
        let streamed = wait_for(Duration::from_secs(30), || {
            bridge.received.video_frames() >= 30
        })
        .await;
        assert!(streamed, "cycle {cycle}: no media");
        let (rss, threads) = rss_and_threads();
        println!(
            "cycle {cycle}: streaming {:?} after the server came up; RSS {rss} KiB, threads {threads}",
            up.elapsed()
        );
        bridges.push(bridge);
        // Crash the server, keep it down for a moment, bring it back on the same port.
        drop(server);
        wait_for(Duration::from_secs(10), || {
            Counters::get(&status.counters.sessions_failed) > u64::from(cycle)
        })
        .await;
        server = FaultServer::start_on(addr, None).await;
        for bridge in bridges.drain(..) {
            bridge.finish().await;
        }
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .unwrap();
    assert_eq!(status.pipelines_running.get(), 0);
    let freed = wait_for(Duration::from_secs(5), || status.pipelines_alive.get() == 0).await;
    assert!(
        freed,
        "{} pipelines never freed",
        status.pipelines_alive.get()
    );
    for bridge in bridges {
        bridge.finish().await;
    }
}
