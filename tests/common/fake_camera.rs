//! An emulated camera for one test: `tests/data/fake_v4l2.c` compiled into a temporary folder
//! and preloaded into the box process only. The kernel driver is what is emulated (these
//! machines have no v4l2loopback or vivid); the box's `v4l2src` is the real element. The
//! device path is a file in the same folder: the camera is plugged in while it exists.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct FakeCamera {
    dir: tempfile::TempDir,
}

impl FakeCamera {
    /// Compiles the shim with `cc`; panics, saying what to install, if there is none.
    pub fn build() -> FakeCamera {
        let dir = tempfile::Builder::new()
            .prefix("airsync-camera")
            .tempdir()
            .unwrap();
        let source = super::repo_path("tests/data/fake_v4l2.c");
        let camera = FakeCamera { dir };
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
            .arg(camera.library())
            .arg(&source)
            .arg("-ldl")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `cc` ({e}): the camera test compiles {} into the box \
                     (`scripts/setup.sh --test` installs gcc and libc6-dev)",
                    source.display()
                )
            });
        assert!(
            out.status.success(),
            "cc {}: {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        camera
    }

    /// The path to give `v4l2src device=`.
    pub fn device(&self) -> PathBuf {
        self.dir.path().join("video0")
    }

    fn library(&self) -> PathBuf {
        self.dir.path().join("libfakev4l2.so")
    }

    pub fn plug(&self) {
        std::fs::write(self.device(), b"").unwrap();
    }

    pub fn unplug(&self) {
        std::fs::remove_file(self.device()).unwrap();
    }

    /// For the box process: the shim preloaded, and the one path it emulates.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Path| p.to_str().expect("a UTF-8 temporary path").to_owned();
        vec![
            ("LD_PRELOAD", path(&self.library())),
            ("AIRSYNC_FAKE_V4L2_DEVICE", path(&self.device())),
        ]
    }
}
