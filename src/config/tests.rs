//! Tests of the merge of file and command line, and of the checks on the result.

use super::*;

fn pipeline_args() -> StreamArgs {
    StreamArgs {
        pipeline: Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/pipelines/test.pipeline"
        ))),
        ..Default::default()
    }
}

fn build(toml_text: &str, args: &StreamArgs) -> Result<Config, ConfigError> {
    let file = FileConfig::from_toml(toml_text, Path::new("test.toml"))?;
    Config::build(file, Path::new("."), args)
}

#[test]
fn full_file_parses_and_command_line_wins() {
    let text = r#"
        [signalling]
        url = "wss://signal.example.org/box"
        answer_timeout = "20s"
        [pipeline]
        webrtcbin = "sendrecv"
        [ice]
        transport_policy = "relay"
        local_addresses = ["127.0.0.1", "::1"]
        [[ice.servers]]
        urls = "stun:stun.example.org:3478"
        [[ice.servers]]
        urls = ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349?transport=tcp"]
        username = "box"
        credential = "p@ss:word"
        [reconnect]
        initial = "250ms"
        [log]
        level = "debug"
    "#;
    let cfg = build(text, &pipeline_args()).unwrap();
    assert_eq!(cfg.signalling.url.as_str(), "wss://signal.example.org/box");
    assert_eq!(cfg.signalling.answer_timeout, Duration::from_secs(20));
    assert_eq!(cfg.pipeline.webrtcbin, "sendrecv");
    assert_eq!(cfg.ice.transport_policy, IcePolicy::Relay);
    assert_eq!(cfg.ice.servers.len(), 2);
    assert_eq!(cfg.ice.servers[1].urls.len(), 2);
    assert_eq!(cfg.ice.local_addresses.len(), 2);
    assert_eq!(cfg.reconnect.initial, Duration::from_millis(250));
    assert_eq!(cfg.log_level, "debug");
    assert!(!format!("{cfg:?}").contains("p@ss:word"));

    let mut args = pipeline_args();
    args.url = Some("ws://127.0.0.1:9/x".into());
    args.ice_transport_policy = Some(IcePolicy::All);
    args.log_level = Some("warn".into());
    let cfg = build(text, &args).unwrap();
    assert_eq!(cfg.signalling.url.as_str(), "ws://127.0.0.1:9/x");
    assert_eq!(cfg.ice.transport_policy, IcePolicy::All);
    assert_eq!(cfg.log_level, "warn");
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("[signalling]\nurl = \"ws://h/\"\ntypo = 1", "typo"),
        ("[signalling]\nurl = \"http://h/\"", "signalling.url"),
        ("[signalling]\nurl = \"not a url\"", "signalling.url"),
        ("", "signalling.url"),
        (
            "[signalling]\nurl = \"ws://h/\"\n[[ice.servers]]\nurls = \"turn:t:3478\"",
            "ice.servers[0]",
        ),
        (
            "[signalling]\nurl = \"ws://h/\"\n[[ice.servers]]\nurls = \"http://t\"",
            "ice.servers[0].urls",
        ),
        (
            "[signalling]\nurl = \"ws://h/\"\n[ice]\ntransport_policy = \"relay\"",
            "ice.transport_policy",
        ),
        (
            "[signalling]\nurl = \"ws://h/\"\n[ice]\nlocal_addresses = [\"localhost\"]",
            "local_addresses",
        ),
        (
            "[signalling]\nurl = \"ws://h/\"\n[[ice.servers]]\nurls = \"turn:t:3478\"\nusername = \"u\"\ncredential = { file = \"/nonexistent/turn\" }",
            "ice.servers[0].credential",
        ),
    ];
    for (text, key) in cases {
        let err = build(text, &pipeline_args()).unwrap_err().to_string();
        assert!(err.contains(key), "`{err}` does not name `{key}`");
    }
}

#[test]
fn video_table_and_command_line() {
    let text = "[signalling]\nurl = \"ws://h/\"\n[video]\nencoder = \"enc\"\nmin_bitrate = 200\nmax_bitrate = 2500\n[audio]\nencoder = \"opus\"";
    let cfg = build(text, &pipeline_args()).unwrap();
    assert_eq!(cfg.video.encoder, "enc");
    assert_eq!(cfg.audio.encoder, "opus");
    assert_eq!(
        (
            cfg.video.min_bitrate,
            cfg.video.start_bitrate,
            cfg.video.max_bitrate
        ),
        (200, 1500, 2500)
    );
    let mut args = pipeline_args();
    args.video_max_bitrate = Some(1000);
    args.video_start_bitrate = Some(5000);
    let cfg = build(text, &args).unwrap();
    assert_eq!(
        (cfg.video.start_bitrate, cfg.video.max_bitrate),
        (1000, 1000)
    );
    args.video_min_bitrate = Some(2000);
    let err = build(text, &args).unwrap_err().to_string();
    assert!(err.contains("video"), "{err}");
    let err = build(
        "[signalling]\nurl = \"ws://h/\"\n[video]\nmax_bitrat = 1",
        &pipeline_args(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("max_bitrat"), "{err}");
}

#[test]
fn missing_pipeline_file_is_named() {
    let args = StreamArgs {
        url: Some("ws://127.0.0.1:1/".into()),
        pipeline: Some("/nonexistent/x.pipeline".into()),
        ..Default::default()
    };
    let err = Config::build(FileConfig::default(), Path::new("."), &args)
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/x.pipeline"), "{err}");
}

#[test]
fn ice_servers_from_command_line_json() {
    let mut args = pipeline_args();
    args.url = Some("ws://127.0.0.1:1/".into());
    args.ice_servers = Some(
        r#"[{"urls":["turn:127.0.0.1:3478?transport=udp"],"username":"u","credential":"c"}]"#
            .into(),
    );
    let cfg = Config::build(FileConfig::default(), Path::new("."), &args).unwrap();
    assert_eq!(cfg.ice.servers[0].username.as_deref(), Some("u"));
    assert_eq!(
        cfg.ice.servers[0].credential.as_ref().unwrap().expose(),
        "c"
    );
}
