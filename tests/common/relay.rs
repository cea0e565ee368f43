//! A UDP impairment relay on 127.0.0.1, standing in for netem (absent from these kernels):
//! what the box sends goes through random loss, a rate limit with a bounded FIFO queue that
//! drops at the tail (like a home router), then a delay with jitter. What the receiver sends
//! back (RTCP, STUN) passes untouched.
//!
//! One socket does both directions: packets from the receiver's address go to the box, any
//! other source is the box. The test server rewrites the receiver's host candidate to the
//! relay's address and withholds the box's candidates from the receiver, so the receiver
//! learns the relay as a peer-reflexive candidate and every packet crosses the relay.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Random loss, 0..=1.
    pub loss: f64,
    pub delay: Duration,
    /// Uniform extra delay in 0..=jitter.
    pub jitter: Duration,
    /// Link rate in bit/s; `None` for unlimited.
    pub rate_bps: Option<u64>,
    /// Queue in front of the link, in bytes; packets that do not fit are dropped.
    pub queue_bytes: usize,
    /// DTLS from the box is lost for this long after its first DTLS packet: a handshake
    /// slowed by loss (retransmitted after 1 s, 2 s, 4 s...).
    pub handshake_loss: Duration,
}

impl Impairment {
    /// A link of `rate_bps` with a queue holding `queue` worth of it.
    pub fn bottleneck(rate_bps: u64, queue: Duration) -> Self {
        Impairment {
            rate_bps: Some(rate_bps),
            queue_bytes: (rate_bps as f64 / 8.0 * queue.as_secs_f64()) as usize,
            ..Default::default()
        }
    }
}

/// Counters of the box → receiver direction.
#[derive(Debug, Default, Clone)]
pub struct RelayStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub lost_random: u64,
    /// DTLS packets from the box lost to `Impairment::handshake_loss`.
    pub lost_handshake: u64,
    pub dropped_queue: u64,
    /// When each of those was dropped.
    pub queue_drops: Vec<Instant>,
    pub packets_back: u64,
    /// RTP packets from the box by payload type (the header is clear text under SRTP).
    pub packets_by_pt: std::collections::BTreeMap<u8, u64>,
    /// (arrival, bytes, RTP payload type) of every packet from the box, for rates over windows.
    pub arrivals: Vec<(Instant, u32, Option<u8>)>,
    /// (arrival, time spent queued before leaving the link).
    pub queue_delays: Vec<(Instant, Duration)>,
}

impl RelayStats {
    /// Bits per second the box sent in `[from, to)`, all packets.
    pub fn rate_between(&self, from: Instant, to: Instant) -> f64 {
        self.rate_without(from, to, None)
    }

    /// Bits per second the box sent in `[from, to)`, leaving out RTP of payload type `except`.
    pub fn rate_without(&self, from: Instant, to: Instant, except: Option<u8>) -> f64 {
        let bytes: u64 = self
            .arrivals
            .iter()
            .filter(|(t, _, pt)| *t >= from && *t < to && (except.is_none() || *pt != except))
            .map(|(_, b, _)| *b as u64)
            .sum();
        bytes as f64 * 8.0 / (to - from).as_secs_f64().max(1e-3)
    }

    /// Queue delays of packets that arrived in `[from, to)`, sorted.
    pub fn queue_delays_between(&self, from: Instant, to: Instant) -> Vec<Duration> {
        let mut d: Vec<_> = self
            .queue_delays
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, d)| *d)
            .collect();
        d.sort();
        d
    }
}

pub struct Relay {
    pub addr: SocketAddr,
    impairment: Arc<Mutex<Impairment>>,
    receiver: Arc<Mutex<Option<SocketAddr>>>,
    stats: Arc<Mutex<RelayStats>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    pub async fn start(impairment: Impairment) -> Relay {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let impairment = Arc::new(Mutex::new(impairment));
        let receiver = Arc::new(Mutex::new(None));
        let stats = Arc::new(Mutex::new(RelayStats::default()));
        let task = tokio::spawn(run(
            socket,
            impairment.clone(),
            receiver.clone(),
            stats.clone(),
        ));
        Relay {
            addr,
            impairment,
            receiver,
            stats,
            task,
        }
    }

    /// Where packets from the box go: the receiver's real (hidden) address.
    pub fn set_receiver(&self, addr: SocketAddr) {
        *self.receiver.lock().unwrap() = Some(addr);
    }

    pub fn set_impairment(&self, impairment: Impairment) {
        *self.impairment.lock().unwrap() = impairment;
    }

    pub fn stats(&self) -> RelayStats {
        self.stats.lock().unwrap().clone()
    }
}

async fn run(
    socket: Arc<UdpSocket>,
    impairment: Arc<Mutex<Impairment>>,
    receiver: Arc<Mutex<Option<SocketAddr>>>,
    stats: Arc<Mutex<RelayStats>>,
) {
    let (link_tx, mut link_rx) = mpsc::unbounded_channel::<(Instant, SocketAddr, Vec<u8>)>();
    let out = socket.clone();
    // Delivery: in arrival order, each packet no earlier than its due time.
    let sender = tokio::spawn(async move {
        while let Some((due, to, packet)) = link_rx.recv().await {
            tokio::time::sleep_until(due).await;
            let _ = out.send_to(&packet, to).await;
        }
    });
    let mut box_addr: Option<SocketAddr> = None;
    let mut first_dtls: Option<Instant> = None;
    // Departure times and sizes of the packets still on the link's queue.
    let mut queue: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut link_free_at = Instant::now();
    let mut last_due = Instant::now();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            break;
        };
        let now = Instant::now();
        let target = *receiver.lock().unwrap();
        if Some(from) == target {
            if let Some(to) = box_addr {
                stats.lock().unwrap().packets_back += 1;
                let _ = socket.send_to(&buf[..n], to).await;
            }
            continue;
        }
        box_addr = Some(from);
        let Some(to) = target else { continue };
        let imp = *impairment.lock().unwrap();
        let mut st = stats.lock().unwrap();
        st.packets_in += 1;
        st.bytes_in += n as u64;
        let pt = rtp_payload_type(&buf[..n]);
        st.arrivals.push((now, n as u32, pt));
        if let Some(pt) = pt {
            *st.packets_by_pt.entry(pt).or_default() += 1;
        }
        if is_dtls(&buf[..n]) {
            let first = *first_dtls.get_or_insert(now);
            if now - first < imp.handshake_loss {
                st.lost_handshake += 1;
                continue;
            }
        }
        if imp.loss > 0.0 && rand::thread_rng().gen::<f64>() < imp.loss {
            st.lost_random += 1;
            continue;
        }
        let departs = match imp.rate_bps {
            Some(rate) => {
                while queue.front().is_some_and(|(t, _)| *t <= now) {
                    queue.pop_front();
                }
                let backlog: usize = queue.iter().map(|(_, b)| b).sum();
                if backlog + n > imp.queue_bytes {
                    st.dropped_queue += 1;
                    st.queue_drops.push(now);
                    continue;
                }
                let serialise = Duration::from_secs_f64(n as f64 * 8.0 / rate as f64);
                let departs = link_free_at.max(now) + serialise;
                link_free_at = departs;
                queue.push_back((departs, n));
                st.queue_delays.push((now, departs - now));
                departs
            }
            None => {
                queue.clear();
                link_free_at = now;
                st.queue_delays.push((now, Duration::ZERO));
                now
            }
        };
        st.packets_out += 1;
        drop(st);
        let jitter = if imp.jitter.is_zero() {
            Duration::ZERO
        } else {
            imp.jitter.mul_f64(rand::thread_rng().gen::<f64>())
        };
        let due = (departs + imp.delay + jitter).max(last_due);
        last_due = due;
        let _ = link_tx.send((due, to, buf[..n].to_vec()));
    }
    sender.abort();
}

/// `candidate:… 1 UDP prio ADDR PORT typ host …` with its address replaced by `addr`; the
/// original address is returned. `None` for anything but a UDP host candidate.
pub fn rewrite_host_candidate(candidate: &str, addr: SocketAddr) -> Option<(String, SocketAddr)> {
    let mut fields: Vec<String> = candidate.split_whitespace().map(str::to_owned).collect();
    if fields.len() < 8 || !fields[2].eq_ignore_ascii_case("udp") || fields[7] != "host" {
        return None;
    }
    let original: SocketAddr = format!("{}:{}", fields[4], fields[5]).parse().ok()?;
    fields[4] = addr.ip().to_string();
    fields[5] = addr.port().to_string();
    Some((fields.join(" "), original))
}

/// DTLS records start with a content type in 20..=63 (RFC 7983's demultiplexing).
fn is_dtls(packet: &[u8]) -> bool {
    packet.first().is_some_and(|b| (20..=63).contains(b))
}

/// The payload type of an RTP packet; `None` for RTCP, STUN, DTLS.
fn rtp_payload_type(packet: &[u8]) -> Option<u8> {
    if packet.len() < 12 || packet[0] >> 6 != 2 || (192..=223).contains(&packet[1]) {
        return None;
    }
    Some(packet[1] & 0x7f)
}
