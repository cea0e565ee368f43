//! The real binary as a subprocess: its output captured line by line, signals sent to the PID
//! the test spawned (and only that one).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test. Cargo names it for integration tests; the benchmark examples that
/// share this module (and never start it) fall back to the one on `PATH`.
pub const BIN: &str = match option_env!("CARGO_BIN_EXE_airsync-streamer") {
    Some(path) => path,
    None => "airsync-streamer",
};

pub struct BoxProcess {
    child: Child,
    /// stdout and stderr, interleaved as they arrived.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl BoxProcess {
    /// The box streaming `pipeline` to the server at `url`, ICE pinned to loopback.
    pub fn streaming(url: &str, pipeline: &std::path::Path, env: &[(&str, String)]) -> BoxProcess {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let pipeline = pipeline.to_str().expect("a UTF-8 path");
        let args = [
            "--url",
            url,
            "--pipeline",
            pipeline,
            "--ice-address",
            super::LOOPBACK,
        ];
        BoxProcess::spawn(&args, &env)
    }

    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> BoxProcess {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("AIRSYNC_CONFIG")
            .env_remove("AIRSYNC_LOG")
            .env_remove("RUST_LOG")
            // libv4l2 makes its ioctls as raw syscalls, past the emulated camera's shim
            // (tests/common/fake_camera.rs); v4l2src uses it only when this is set.
            .env_remove("GST_V4L2_USE_LIBV4L2")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the binary starts");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for pipe in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    eprintln!("[box] {line}");
                    lines.lock().unwrap().push(line);
                }
            });
        }
        BoxProcess { child, lines }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the PID of our own child process.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn count_lines(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| pred(l))
            .count()
    }

    /// Waits for the process to exit, at most `within`. `None` if it is still running.
    /// Sends SIGTERM and waits for the exit (at most 5 s); prints how long it took.
    pub async fn stop_with_sigterm(&mut self) -> ExitStatus {
        let sent = Instant::now();
        self.signal(libc::SIGTERM);
        let status = self
            .wait_exit(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no exit within 5 s of SIGTERM:\n{}", self.output()));
        println!("exited {status} {:?} after SIGTERM", sent.elapsed());
        status
    }

    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tick.tick().await;
        }
    }
}

impl Drop for BoxProcess {
    fn drop(&mut self) {
        // A test that failed half-way must not leave its box running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
