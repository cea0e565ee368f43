//! The DTLS certificate all of the process's sessions share.
//!
//! GStreamer 1.22's DTLS elements use one certificate per process, generated when the first
//! of them is created: a 2048-bit RSA key, 0.2 to 0.6 s of one core here (the search for
//! primes is random). Left alone, that happens inside the first session, between connecting
//! to the server and sending the offer. Made on a thread of its own at start-up, it overlaps
//! with loading the plugins and connecting instead; a session that needs the certificate
//! sooner waits for it inside GStreamer.

use std::sync::Once;
use std::time::Instant;

/// Starts generating the process's DTLS certificate in the background. Only the first call
/// does anything.
pub fn prepare_certificate() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("airsync-dtls".into())
            .spawn(generate);
        if let Err(e) = spawned {
            tracing::debug!("DTLS certificate left to the first session: {e}");
        }
    });
}

fn generate() {
    let started = Instant::now();
    // A missing plugin or a failed init is reported where it matters, by the pipeline check
    // and webrtcbin; here it only means no head start.
    let made = super::init().map_err(|e| e.to_string()).and_then(|()| {
        gst::ElementFactory::make("dtlsdec")
            .build()
            .map_err(|e| e.to_string())
    });
    match made {
        Ok(_) => tracing::debug!(elapsed = ?started.elapsed(), "DTLS certificate ready"),
        Err(e) => tracing::debug!("DTLS certificate left to the first session: {e}"),
    }
}
