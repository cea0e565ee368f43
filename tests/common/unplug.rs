//! One capture device unplugged from a streaming box and plugged back, the same for every kind
//! of device (`tests/camera.rs`, `tests/devices.rs`): the session ends with one line naming the
//! device, each retry while it is absent fails fast naming it without connecting, the process
//! stays up, once the device is back a new session (a new sessionId) streams again, and
//! SIGTERM then ends the box cleanly.

use std::time::{Duration, Instant};

use airsync_streamer::server::answerer::ReceivedMedia;

use super::process::BoxProcess;
use super::{wait_for, ProtocolServer};

const STREAM: Duration = Duration::from_secs(30);

pub struct Device<'a> {
    /// "camera", "microphone": for the messages.
    pub what: &'a str,
    /// How the box names it in its log lines (a path, a PulseAudio source).
    pub name: &'a str,
    /// Whether a session is streaming what this device captures, with what it has received so
    /// far in the message.
    pub streams: &'a dyn Fn(&ReceivedMedia) -> (bool, String),
}

pub async fn unplug_and_replug(
    server: &mut ProtocolServer,
    process: &mut BoxProcess,
    device: Device<'_>,
    unplug: impl FnOnce(),
    plug: impl FnOnce(),
) {
    let Device {
        what,
        name,
        streams,
    } = device;
    let first = server.next_session().await;
    let flowing = wait_for(STREAM, || streams(&first).0).await;
    assert!(
        flowing,
        "session 1 did not stream ({}):\n{}",
        streams(&first).1,
        process.output()
    );
    let first_ids = server.offered_session_ids();
    assert_eq!(first_ids.len(), 1, "{first_ids:?}");

    unplug();
    let unplugged = Instant::now();
    let is_gone = |l: &str| l.contains(name) && l.contains("is gone");
    let ended = wait_for(Duration::from_secs(10), || {
        process.count_lines(is_gone) >= 1
    })
    .await;
    assert!(
        ended,
        "no error naming {name} after the unplug:\n{}",
        process.output()
    );
    println!("{what} unplug noticed after {:?}", unplugged.elapsed());

    let not_found = |l: &str| l.contains(name) && l.contains("not found");
    let retried = wait_for(Duration::from_secs(15), || {
        process.count_lines(not_found) >= 2
    })
    .await;
    assert!(
        retried,
        "retries did not name {name}:\n{}",
        process.output()
    );
    assert_eq!(process.count_lines(is_gone), 1, "{}", process.output());
    assert!(
        server.sessions.try_recv().is_err(),
        "the box connected while the {what} was missing"
    );
    assert!(
        process.wait_exit(Duration::ZERO).await.is_none(),
        "the box exited:\n{}",
        process.output()
    );

    plug();
    let replugged = Instant::now();
    let second = server.next_session().await;
    let flowing = wait_for(STREAM, || streams(&second).0).await;
    assert!(
        flowing,
        "no media after the {what} came back ({}):\n{}",
        streams(&second).1,
        process.output()
    );
    println!(
        "streaming again {:?} after the {what} came back",
        replugged.elapsed()
    );
    let ids = server.offered_session_ids();
    assert_eq!(ids.len(), 2, "one offer per connected session: {ids:?}");
    assert_ne!(ids[0], ids[1], "the new session has a new sessionId");

    let status = process.stop_with_sigterm().await;
    assert_eq!(status.code(), Some(0), "{}", process.output());
}
