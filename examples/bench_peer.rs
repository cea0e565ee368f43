//! The receiving peer of `scripts/bench.sh`, in its own process: the test server (WebSocket on
//! 127.0.0.1 plus a receiving webrtcbin that decodes) prints its URL, then one line per
//! session with the time from the offer, and from the answer, to the first decoded frame, and
//! the wall-clock time of that frame (for the time from the box's process start).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut server = start_server(loopback_ice()).await;
    println!("URL {}", server.url());
    std::io::stdout().flush().unwrap();
    let mut index = 0;
    while let Some(received) = server.sessions.recv().await {
        let got = wait_for(Duration::from_secs(30), || {
            received.first_video_frame.get().is_some()
        })
        .await;
        let Some(first) = received.first_video_frame.get().copied() else {
            println!("session {index}: no decoded frame within 30 s ({got})");
            index += 1;
            continue;
        };
        let times = server.signal_times.lock().unwrap().clone();
        let nth = |dir: Dir, kind: &str| {
            times
                .iter()
                .filter(|(d, k, _)| *d == dir && k == kind)
                .nth(index)
                .map(|(_, _, t)| *t)
        };
        let ms = |t: Option<std::time::Instant>| {
            t.map(|t| format!("{:.1}", first.duration_since(t).as_secs_f64() * 1000.0))
                .unwrap_or_else(|| "?".into())
        };
        let at = std::time::SystemTime::now() - first.elapsed();
        let at_unix_ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        println!(
            "FIRST_FRAME session={index} from_offer_ms={} from_answer_ms={} at_unix_ms={at_unix_ms}",
            ms(nth(Dir::FromBox, "offer")),
            ms(nth(Dir::ToBox, "answer"))
        );
        std::io::stdout().flush().unwrap();
        index += 1;
    }
}
