//! End-to-end TLS with a test CA: ffmpeg publishes over RTMPS and plays over RTMPS and
//! HTTPS (HTTP-FLV and HLS) checking the certificate, the control API answers over HTTPS,
//! plain connections still work on the same ports, and a certificate replaced while a
//! player plays (by writing the files, or on SIGHUP) is what the next connection gets,
//! while the player goes on.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use testkit::*;

/// A CA of its own and a certificate it signed for 127.0.0.1 and localhost; `ca` is the
/// CA's PEM file.
struct Pki {
    ca: PathBuf,
    chain: String,
    key: String,
}

fn pki(dir: &Path, name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    (ca_params.distinguished_name).push(DnType::CommonName, format!("ferrolive test CA {name}"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let ca_file = dir.join(format!("ca-{name}.pem"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    Pki {
        ca: ca_file,
        chain: cert.pem() + &ca.pem(),
        key: key.serialize_pem(),
    }
}

/// Put `pki`'s certificate where the server reads it.
fn install(pki: &Pki, cert: &Path, key: &Path) {
    std::fs::write(key, &pki.key).unwrap();
    std::fs::write(cert, &pki.chain).unwrap();
}

/// Whether `url` answers 200 to curl trusting only `ca`.
fn trusted_by(url: &str, ca: &Path) -> bool {
    let status = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg("--cacert")
        .arg(ca)
        .arg(url)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&status.stdout) == "200"
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Video frames ffmpeg decodes from `url` in `seconds`, verifying its certificate with
/// `ca`.
fn decode_verified(url: &str, ca: &Path, seconds: u32) -> usize {
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-tls_verify",
            "1",
            "-ca_file",
        ])
        .arg(ca)
        .args([
            "-rw_timeout",
            "10000000",
            "-i",
            url,
            "-t",
            &seconds.to_string(),
        ])
        .args(["-map", "0:v", "-f", "framecrc", "-"])
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg");
    let text = String::from_utf8_lossy(&out.stdout);
    let frames = text.lines().filter(|l| l.starts_with("0,")).count();
    if frames == 0 {
        eprintln!("{url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    frames
}

#[test]
fn rtmps_https_and_a_certificate_replaced_while_playing() {
    require_ffmpeg();
    let dir = temp_dir("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let first = pki(&dir, "first");
    install(&first, &cert, &key);
    let rtmps = format!("127.0.0.1:{}", free_port());
    let server = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--rtmps-addr",
        &rtmps,
        "--hls-segment",
        "1",
    ]);

    // ffmpeg publishes over RTMPS, checking the certificate against the test CA.
    let ca = first.ca.to_str().unwrap();
    let url = format!("rtmps://{rtmps}/live/secure");
    let options = ["-tls_verify", "1", "-ca_file", ca, "-f", "flv"];
    let _publisher = publish_with(&url, Source::AudioVideo, 25, 0, &options);
    server.wait_live("secure");

    let https = format!("https://{}", server.http);
    let stranger = pki(&dir, "stranger");
    assert_eq!(
        decode_verified(&format!("{https}/live/secure.flv"), &stranger.ca, 1),
        0,
        "a CA that did not sign the certificate is not trusted"
    );
    assert!(decode_verified(&format!("{https}/live/secure.flv"), &first.ca, 2) > 25);
    assert!(decode_verified(&format!("rtmps://{rtmps}/live/secure"), &first.ca, 2) > 25);
    assert!(decode_verified(&format!("{https}/live/secure.m3u8"), &first.ca, 3) > 25);
    // Plain HTTP and RTMP on the same ports as before.
    assert!(decode(&server.flv_url("secure"), 1.0).video > 0);
    assert!(decode(&server.rtmp_url("secure"), 1.0).video > 0);
    // Browsers get HTTP/2 over TLS (ALPN) for playlists, segments and parts.
    let version = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            "--http2",
            "--cacert",
        ])
        .arg(&first.ca)
        .arg(format!("{https}/live/secure/index.m3u8"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout), "2");
    // The control API, over HTTPS beside HTTP.
    assert!(trusted_by(
        &format!("https://{}/api/v1/rooms", server.api),
        &first.ca
    ));

    // A player over HTTPS plays on while the certificate is replaced under it.
    let flv = format!("{https}/live/secure.flv");
    let ca = first.ca.clone();
    let player = std::thread::spawn(move || decode_verified(&flv, &ca, 8));
    std::thread::sleep(Duration::from_secs(2));
    let second = pki(&dir, "second");
    install(&second, &cert, &key);
    let healthz = format!("{https}/healthz");
    wait_until("the new certificate in use", Duration::from_secs(5), || {
        trusted_by(&healthz, &second.ca)
    });
    assert!(
        !trusted_by(&healthz, &first.ca),
        "the old certificate is gone"
    );
    let frames = player.join().unwrap();
    assert!(
        frames >= 8 * 25 * 8 / 10,
        "the player went on: {frames} frames in 8 s"
    );

    // Files rewritten without a new modification time are not noticed; SIGHUP reads them.
    let third = pki(&dir, "third");
    let stamp = std::fs::metadata(&cert).unwrap().modified().unwrap();
    install(&third, &cert, &key);
    for file in [&cert, &key] {
        let file = std::fs::File::options().append(true).open(file).unwrap();
        file.set_modified(stamp).unwrap();
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        trusted_by(&healthz, &second.ca),
        "not reloaded without a change"
    );
    let hup = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_until("SIGHUP reloads", Duration::from_secs(5), || {
        trusted_by(&healthz, &third.ca)
    });

    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_certificate_is_refused_at_start() {
    let dir = temp_dir("tls-bad");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let out = Command::new(ferrolive_binary().unwrap())
        .args(["standalone", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("cert.pem") && error.contains("no PEM certificate"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
