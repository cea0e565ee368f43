//! The documented example configuration is valid, including its systemd credential.

use std::path::Path;

use airsync_streamer::config::{Config, IcePolicy, StreamArgs};

#[test]
fn example_config_loads_with_systemd_credentials() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let etc = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    std::fs::copy(
        root.join("examples/airsync.toml"),
        etc.path().join("airsync.toml"),
    )
    .unwrap();
    std::fs::copy(
        root.join("pipelines/camera.pipeline"),
        etc.path().join("camera.pipeline"),
    )
    .unwrap();
    std::fs::write(creds.path().join("turn-credential"), "from-systemd\n").unwrap();
    // This test file is its own process, and this is its only test: nothing races the env.
    std::env::set_var("CREDENTIALS_DIRECTORY", creds.path());

    let args = StreamArgs {
        config: Some(etc.path().join("airsync.toml")),
        ..Default::default()
    };
    let cfg = Config::load(&args).unwrap();
    assert_eq!(cfg.signalling.url.as_str(), "wss://signal.example.org/box");
    assert_eq!(cfg.pipeline.file, etc.path().join("camera.pipeline"));
    assert_eq!(cfg.ice.transport_policy, IcePolicy::All);
    let turn = &cfg.ice.servers[1];
    assert_eq!(turn.urls.len(), 3);
    assert_eq!(turn.credential.as_ref().unwrap().expose(), "from-systemd");
    assert!(!format!("{cfg:?}").contains("from-systemd"));

    std::env::remove_var("CREDENTIALS_DIRECTORY");
    let err = Config::load(&args).unwrap_err().to_string();
    assert!(
        err.contains("CREDENTIALS_DIRECTORY") && err.contains("turn-credential"),
        "{err}"
    );
}
