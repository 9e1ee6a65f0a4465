//! What the browser tests share: where their scripts are, and the check that Chromium,
//! Node.js and the npm packages are there.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// `tests/browser` of the workspace: the Playwright scripts and their `node_modules`.
pub fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser")
}

/// Panics with what to do unless Chromium, Node.js and the players are there. The guard
/// it returns runs the browser tests of a test binary one at a time: each drives up to
/// three Chromiums with a publisher and servers, and together they would starve each
/// other of CPU (two cores) until the players stalled.
pub fn require_browser() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is required: run the test command from README.md, which installs it"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "tests/browser/node_modules is missing: run the test command from README.md (it runs npm ci there)"
    );
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `node SCRIPT ARGS...` in `tests/browser` and give the last line it printed (each
/// script reports as one JSON line at the end); panics with its stderr if it printed
/// nothing.
pub fn run_script(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("node")
        .current_dir(browser_dir())
        .arg(script)
        .args(args)
        .output()
        .expect("node is required: run the test command from README.md");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().last() {
        Some(line) => line.to_owned(),
        None => panic!(
            "{script} printed nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
