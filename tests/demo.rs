//! `demo`, what the README's main command runs when nothing is configured: the embedded
//! server, its fallback answerer and a box streaming to it, in one process. Run as a user
//! runs it, from the repository, with only a port chosen so that tests do not collide.

mod common;

use std::time::Duration;

use airsync_streamer::server::answerer::ANSWERER_GREETING;
use common::process::BoxProcess;
use common::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_streams_to_its_own_server_and_stops_cleanly_on_ctrl_c() {
    // Loopback only: the demo pins ICE to 127.0.0.1 unless given --ice-address.
    let mut demo = BoxProcess::spawn(&["demo", "--listen", "127.0.0.1:0"], &[]);
    let printed_url = |l: &str| l.contains("open http://127.0.0.1:") && l.contains("in a browser");
    // The answerer's greeting reaches the box over the data channel: ICE, DTLS and SCTP are
    // up between the box and the server's own peer.
    let greeted = |l: &str| l.contains("data channel message") && l.contains(ANSWERER_GREETING);
    let up = wait_for(Duration::from_secs(30), || {
        demo.count_lines(printed_url) == 1 && demo.count_lines(greeted) >= 1
    })
    .await;
    assert!(up, "the demo did not stream:\n{}", demo.output());
    assert_eq!(
        demo.count_lines(|l| l.contains("peer connection state=Connected")),
        2,
        "the box and the answerer both connected:\n{}",
        demo.output()
    );

    // What webrtcbin says in every healthy session of a receive-only answerer is not a warning.
    let routine = |l: &str| {
        l.contains(" WARN ")
            && (l.contains("did not find compatible transceiver")
                || l.contains("failed to match fec decoder"))
    };
    assert_eq!(demo.count_lines(routine), 0, "{}", demo.output());

    demo.signal(libc::SIGINT);
    let status = demo
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no exit within 5 s of Ctrl-C:\n{}", demo.output()));
    assert_eq!(status.code(), Some(0), "{}", demo.output());
    // The box stops before its server: its session ends as asked, not as a lost server
    // that it would start to reconnect to.
    for lost in ["session ended", "starting a new session"] {
        assert_eq!(
            demo.count_lines(|l| l.contains(lost)),
            0,
            "`{lost}` at Ctrl-C:\n{}",
            demo.output()
        );
    }
    assert_eq!(
        demo.count_lines(|l| l.contains("session stopped")),
        1,
        "{}",
        demo.output()
    );
}
