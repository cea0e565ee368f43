//! A private PulseAudio daemon owned by one test: its own socket, runtime folder and home in a
//! temporary folder, no configuration file, no other client. A microphone is a null sink's
//! monitor source, which the test can unload ("unplug") and load again ("plug back").
//! Only the PID this module spawned is ever signalled.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PulseServer {
    child: Child,
    dir: tempfile::TempDir,
}

impl PulseServer {
    /// Starts the daemon and waits until it answers. `Err` says why PulseAudio cannot run here.
    pub fn start() -> Result<PulseServer, String> {
        let dir = tempfile::Builder::new()
            .prefix("airsync-pulse")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("pulseaudio.log")).map_err(|e| e.to_string())?;
        let socket = dir.path().join("native");
        let mut cmd = Command::new("pulseaudio");
        // Root (CI) may run a per-user daemon; it warns and goes on. `-n` skips default.pa,
        // so nothing but the socket is loaded: no D-Bus, no ALSA, no autospawn of anything.
        cmd.args([
            "--daemonize=no",
            "--system=false",
            "-n",
            "--use-pid-file=no",
            "--exit-idle-time=-1",
            "--disallow-exit=yes",
            "--realtime=no",
            "--high-priority=no",
            "--disable-shm=yes",
            "--log-target=stderr",
        ])
        .arg(format!(
            "--load=module-native-protocol-unix socket={} auth-anonymous=1",
            socket.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        for (k, v) in env_for(dir.path()) {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start `pulseaudio`: {e}"))?;
        let mut pulse = PulseServer { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match pulse.pactl(&["info"]) {
                Ok(_) => return Ok(pulse),
                Err(e) if e.starts_with("cannot run pactl") => return Err(e),
                Err(_) => {}
            }
            if let Ok(Some(status)) = pulse.child.try_wait() {
                return Err(format!("pulseaudio exited ({status}):\n{}", pulse.log()));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "pulseaudio did not answer in 10 s:\n{}",
                    pulse.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `server=` for `pulsesrc` and `--server` for pactl.
    pub fn server(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("native")
    }

    /// HOME and runtime folders of the daemon, for its clients too, so none of them reads or
    /// writes a real user's PulseAudio state.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        env_for(self.dir.path())
    }

    pub fn pactl(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new("pactl");
        cmd.arg("--server").arg(self.server()).args(args);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run pactl (package pulseaudio-utils): {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "pactl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Loads a null sink named `name`; its monitor, `<name>.monitor`, is the microphone.
    /// Returns the module index, for [`unload_module`](Self::unload_module).
    pub fn load_null_sink(&self, name: &str) -> u32 {
        let index = self
            .pactl(&[
                "load-module",
                "module-null-sink",
                &format!("sink_name={name}"),
            ])
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
        index
            .parse()
            .unwrap_or_else(|_| panic!("module index from pactl: {index:?}"))
    }

    pub fn unload_module(&self, index: u32) {
        self.pactl(&["unload-module", &index.to_string()])
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pulseaudio.log")).unwrap_or_default()
    }
}

fn env_for(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let d = dir.display();
    vec![
        ("HOME", d.to_string()),
        ("XDG_RUNTIME_DIR", d.to_string()),
        ("XDG_CONFIG_HOME", format!("{d}/config")),
        ("PULSE_RUNTIME_PATH", format!("{d}/pulse")),
    ]
}

impl Drop for PulseServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the PID of the daemon this test spawned.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
    }
}

/// The daemon, or `None` after saying why the test is skipped. On CI (`CI` set) PulseAudio
/// must run (`scripts/setup.sh --test` installs it), so there a failure fails the test.
pub fn start_or_skip(test: &str) -> Option<PulseServer> {
    match PulseServer::start() {
        Ok(pulse) => Some(pulse),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("{test}: PulseAudio must run on CI: {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED {test}: PulseAudio cannot run here ({e}); `scripts/setup.sh --test` installs it"
            );
            None
        }
    }
}
