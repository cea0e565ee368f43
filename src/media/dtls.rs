//! The DTLS certificate all of the process's sessions share.
//!
//! GStreamer 1.22's DTLS elements use one certificate per process, generated when the first
//! of them is created: a 2048-bit RSA key, 0.2 to 0.6 s of one core here (the search for
//! primes is random). Left alone, that happens inside the first session, between connecting
//! to the server and sending the offer. Made on a thread of its own at start-up, it overlaps
//! with loading the plugins and connecting instead; a session that needs the certificate
//! sooner waits for it inside GStreamer.
//!
//! The process must not exit while that thread runs: OpenSSL's exit handler frees the locks
//! the key generation is using, and the process dies of SIGSEGV instead of exiting 0 (a
//! SIGTERM in the first half-second did that). `wait_for_certificate` joins it.

use std::sync::{Mutex, Once};
use std::thread::JoinHandle;
use std::time::Instant;

static WORKER: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);

/// Starts generating the process's DTLS certificate in the background. Only the first call
/// does anything.
pub fn prepare_certificate() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("airsync-dtls".into())
            .spawn(generate);
        match spawned {
            Ok(handle) => *WORKER.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle),
            Err(e) => tracing::debug!("DTLS certificate left to the first session: {e}"),
        }
    });
}

/// Waits until the certificate started by `prepare_certificate` is made, if it is still
/// being made. Called before the process exits.
pub fn wait_for_certificate() {
    let handle = WORKER.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(handle) = handle {
        if handle.join().is_err() {
            tracing::debug!("the DTLS certificate thread panicked");
        }
    }
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
