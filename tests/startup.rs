//! End-to-end: how a node starts — what it reads (flags, environment, config file) and
//! what it says when it cannot.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::*;

/// A port already in use ends start-up with one line that names the listener and its
/// address, and no backtrace even when `RUST_BACKTRACE` asks for one.
#[test]
fn a_taken_port_ends_start_up_with_one_line_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let free = || format!("127.0.0.1:{}", free_port());
    let data = temp_dir("taken-port");
    let data = data.to_str().unwrap();
    let cases = [
        (
            "RTMP",
            vec!["standalone", "--rtmp-addr", &addr, "--data-dir", data],
        ),
        (
            "player HTTP",
            vec![
                "standalone",
                "--rtmp-addr",
                "127.0.0.1:0",
                "--http-addr",
                &addr,
                "--data-dir",
                data,
            ],
        ),
        ("control API", vec!["control-api", "--api-addr", &addr]),
    ];
    for (what, args) in cases {
        let mut command = Command::new(ferrolive_binary().expect("ferrolive is built"));
        command.args(&args).env("RUST_BACKTRACE", "full");
        if args[0] == "standalone" && what != "control API" {
            command.args(["--api-addr", &free()]);
        }
        let out = command.output().unwrap();
        assert!(!out.status.success(), "{what}: started on a taken port");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("ferrolive: ") && last.contains(what) && last.contains(&addr),
            "{what}: the last line does not name the listener and its address: {last}"
        );
        assert_eq!(
            last.matches("Address already in use").count(),
            1,
            "{what}: {last}"
        );
        assert!(!stderr.contains("backtrace"), "{what}: {stderr}");
    }
}

/// `--config` sets any option and per-app HLS; flags and `FERROLIVE_*` variables win over
/// it; a mistake in it ends start-up with one line naming the file and the key.
#[test]
fn the_config_file_is_read_and_flags_and_the_environment_override_it() {
    require_ffmpeg();
    let port = || format!("127.0.0.1:{}", free_port());
    let (rtmp, http_in_file, http_flag, api_in_file, api_env) =
        (port(), port(), port(), port(), port());
    let dir = temp_dir("config-file");
    let file = dir.join("ferrolive.toml");
    std::fs::write(
        &file,
        format!(
            "rtmp-addr = \"{rtmp}\"\nhttp_addr = \"{http_in_file}\"\napi-addr = \"{api_in_file}\"\n\
             rtmp-noauth = true\ndata-dir = \"{}\"\nhls-segment = 1\n\n\
             [app.live]\n\n[app.game]\nhls-segment = 3\nhls-window = 2\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut node = Proc(
        Command::new(ferrolive_binary().expect("ferrolive is built"))
            .args([
                "--config",
                file.to_str().unwrap(),
                "--http-addr",
                &http_flag,
            ])
            .env("FERROLIVE_API_ADDR", &api_env)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http: SocketAddr = http_flag.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(http, "/healthz").map(|r| r.status) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the node did not come up on the flag's HTTP address"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The flag and the variable replaced the file's addresses.
    assert!(TcpStream::connect(&http_in_file).is_err());
    assert!(TcpStream::connect(&api_in_file).is_err());
    let api: SocketAddr = api_env.parse().unwrap();
    assert_eq!(http_get(api, "/healthz").map(|r| r.status), Some(200));

    // The file's RTMP address, its apps, and each app's HLS settings.
    let _live = publish(&format!("rtmp://{rtmp}/live/a"), Source::AudioVideo, 25, 0);
    let _game = publish(&format!("rtmp://{rtmp}/game/b"), Source::AudioVideo, 25, 0);
    let (accepted, _other) =
        publish_accepted(&format!("rtmp://{rtmp}/other/c"), Duration::from_secs(3));
    assert!(!accepted, "an app the file does not list was served");
    let playlist = |path: &str| {
        let r = http_get(http, path).expect("playlist");
        assert_eq!(r.status, 200, "{path}");
        String::from_utf8(r.body).unwrap()
    };
    let live = playlist("/live/a.m3u8");
    assert!(live.contains("#EXT-X-TARGETDURATION:1\n"), "{live}");
    std::thread::sleep(Duration::from_secs(10));
    let game = playlist("/game/b.m3u8");
    assert!(game.contains("#EXT-X-TARGETDURATION:3\n"), "{game}");
    assert_eq!(game.matches("#EXTINF").count(), 2, "{game}");

    node.kill();

    // A misspelt option: one line naming the file and the key.
    std::fs::write(&file, "rtmp-adress = \"0.0.0.0:1935\"\n").unwrap();
    let out = Command::new(ferrolive_binary().unwrap())
        .args(["origin", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(file.to_str().unwrap())
            && stderr.contains("`rtmp-adress` is not an option of `ferrolive origin`"),
        "{stderr}"
    );
}
