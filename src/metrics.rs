//! Counters and the current phase of the box. The rest of the code only bumps them; systemd
//! STATUS, logs and tests read them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::session::Phase;

#[derive(Debug, Default)]
pub struct Counters {
    pub sessions_started: AtomicU64,
    pub sessions_failed: AtomicU64,
    pub sessions_streamed: AtomicU64,
    pub offers_sent: AtomicU64,
    pub answers_applied: AtomicU64,
    pub local_candidates_sent: AtomicU64,
    pub remote_candidates_added: AtomicU64,
    pub remote_messages_dropped: AtomicU64,
    pub data_channel_messages_received: AtomicU64,
    /// Congestion control: estimates received, and the latest estimate (bit/s) and video
    /// encoder bitrate (kbit/s) of the current session.
    pub bandwidth_estimates: AtomicU64,
    pub bandwidth_estimate_bps: AtomicU64,
    pub video_bitrate_kbps: AtomicU64,
    /// 0 full picture, 1 half size, 2 half size at half frame rate (see `congestion.rs`).
    pub video_picture_level: AtomicU64,
    /// The highest picture level in this process's life.
    pub video_picture_level_max: AtomicU64,
    /// The video encoder's average H.264 quantiser, rounded (0 until known; see
    /// `media/quantiser.rs`).
    pub video_quantiser: AtomicU64,
    /// RTCP receiver reports (with report blocks) heard from the peer in this process's life.
    pub receiver_reports: AtomicU64,
    /// The Opus encoder's `packet-loss-percentage`: the 10-s average of the loss RTCP receiver
    /// reports show about the audio (see `recovery::AudioLoss`).
    pub audio_expected_loss_percent: AtomicU64,
    /// Key frame requests the video encoder answered, and the longest and latest answer (µs)
    /// from the request reaching the encoder to the key frame leaving it.
    pub key_frames_answered: AtomicU64,
    pub key_frame_answer_max_us: AtomicU64,
    pub key_frame_answer_last_us: AtomicU64,
    /// The most delta frames the encoder put out between a request and its key frame (0 or
    /// 1 when every request was answered by the first frame the encoder began after it).
    pub key_frame_answer_frames_max: AtomicU64,
    /// Retransmission requests refused because resending would have gone over the send
    /// estimate (see `media/retransmission.rs`).
    pub retransmissions_refused: AtomicU64,
    /// Media buffers (RTP packets) dropped at webrtcbin's input before the peer first
    /// connected, in this process's life (see `media/gate.rs`).
    pub buffers_dropped_before_connected: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }

    /// Keeps the highest value seen.
    pub fn raise(gauge: &AtomicU64, value: u64) {
        gauge.fetch_max(value, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down. Clones share the value, so a gauge can be handed to an
/// object that outlives the borrow of [`Status`] (a pipeline's finalisation, say).
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Shared by the supervisor, its sessions and whoever watches them.
#[derive(Debug)]
pub struct Status {
    pub phase: watch::Sender<Phase>,
    pub counters: Counters,
    /// Pipelines out of `Null`: up while a session's `PipelineGuard` lives. 0 once every
    /// session has ended; anything else is a leaked, running pipeline.
    pub pipelines_running: Gauge,
    /// Pipeline objects not yet finalised (freed by GLib). It falls back to 0 shortly after a
    /// session ends unless something (a signal closure, a task) still holds the pipeline.
    pub pipelines_alive: Gauge,
    /// Why the last session failed, for systemd's STATUS line. Never holds a secret: errors
    /// name files, devices and URLs without their query.
    pub last_error: Mutex<Option<String>>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            phase: watch::Sender::new(Phase::Starting),
            counters: Counters::default(),
            pipelines_running: Gauge::default(),
            pipelines_alive: Gauge::default(),
            last_error: Mutex::new(None),
        }
    }
}

impl Status {
    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }
}
