//! End-to-end: how a node starts — what it reads (flags, environment, config file) and
//! what it says when it cannot.

use std::net::TcpListener;
use std::process::Command;

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
