//! `--config FILE`: a TOML file with any option the command line takes, and per-app
//! sections.
//!
//! ```toml
//! rtmp-addr = "0.0.0.0:1935"      # any long flag of the subcommand, without `--`
//! hls-segment = 2                 # (snake_case works too: hls_segment)
//! apps = ["live", "game"]         # lists may be arrays
//!
//! [app.game]                      # an app's own HLS settings and hooks
//! hls-segment = 4
//! hls-window = 10
//! on-play = "http://hooks.internal/game/play"
//! ```
//!
//! Precedence: flags, then `FERROLIVE_*` variables, then the file, then the defaults. The
//! file's options become flags placed before the command line's, skipped when the command
//! line or the environment already sets them, so clap parses and checks everything
//! alike. Without an `apps` option, the `[app.*]` sections name the apps that exist.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use serve::hooks::HookEvent;

/// The file given by `--config` (or `FERROLIVE_CONFIG`), if any.
pub fn file_in(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("FERROLIVE_CONFIG").map(PathBuf::from)
}

/// What a config file holds, checked against the command it configures.
#[derive(Debug, Default)]
pub struct ConfigFile {
    /// `--name value` pairs (`value` `None` for a flag that is on).
    options: Vec<(String, Option<String>)>,
    /// `[app.NAME]` sections.
    pub apps: BTreeMap<String, AppSection>,
}

/// An app's own settings; what it leaves out comes from the node's.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AppSection {
    pub hls_segment: Option<Duration>,
    pub hls_window: Option<usize>,
    /// The app's own hooks (`on-play = "URL"`, ...): which event, and its URL.
    pub hooks: Vec<(HookEvent, String)>,
}

impl ConfigFile {
    pub fn read(path: &Path, command: &clap::Command) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        ConfigFile::parse(&text, command).with_context(|| format!("config file {}", path.display()))
    }

    /// Parse `text` for `command` (a subcommand, whose long flags are the valid keys).
    pub fn parse(text: &str, command: &clap::Command) -> anyhow::Result<ConfigFile> {
        let table: serde_json::Map<String, Value> =
            basic_toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut file = ConfigFile::default();
        for (key, value) in table {
            let name = key.replace('_', "-");
            if name == "app" {
                file.apps = app_sections(&value)?;
                continue;
            }
            let Some(arg) = command
                .get_arguments()
                .find(|a| a.get_long() == Some(name.as_str()))
                .filter(|_| name != "config")
            else {
                bail!(
                    "`{key}` is not an option of `ferrolive {}`",
                    command.get_name()
                );
            };
            let takes_value = arg.get_action().takes_values();
            let value = match (value, takes_value) {
                (Value::Bool(true), false) => None,
                (Value::Bool(false), false) => continue,
                (_, false) => bail!("`{key}` is a switch: true or false"),
                (Value::String(s), true) => Some(s),
                (Value::Number(n), true) => Some(n.to_string()),
                (Value::Array(items), true) => {
                    let items = items
                        .iter()
                        .map(scalar)
                        .collect::<Option<Vec<_>>>()
                        .with_context(|| format!("`{key}`: a list of strings or numbers"))?;
                    // An option given many times (relay rules) takes each item as its own
                    // value; others take the list comma-separated.
                    if matches!(arg.get_action(), clap::ArgAction::Append) {
                        file.options
                            .extend(items.into_iter().map(|item| (name.clone(), Some(item))));
                        continue;
                    }
                    Some(items.join(","))
                }
                (_, true) => bail!("`{key}`: a string, a number or a list"),
            };
            file.options.push((name, value));
        }
        if !file.apps.is_empty() && !file.options.iter().any(|(name, _)| name == "apps") {
            let names: Vec<&str> = file.apps.keys().map(String::as_str).collect();
            if command
                .get_arguments()
                .any(|a| a.get_long() == Some("apps"))
            {
                file.options.push(("apps".into(), Some(names.join(","))));
            }
        }
        Ok(file)
    }

    /// `args` (program, subcommand if any, flags) with the file's options inserted before
    /// the flags, except those the command line or the environment already sets.
    pub fn merge_into(&self, args: Vec<OsString>, command: &clap::Command) -> Vec<OsString> {
        let given = |name: &str| {
            let flag = format!("--{name}");
            let with_value = format!("--{name}=");
            args.iter().any(|a| {
                let a = a.to_string_lossy();
                a == flag || a.starts_with(&with_value)
            })
        };
        let in_env = |name: &str| {
            command
                .get_arguments()
                .find(|a| a.get_long() == Some(name))
                .and_then(|a| a.get_env())
                .is_some_and(|env| std::env::var_os(env).is_some())
        };
        let mut from_file = Vec::new();
        for (name, value) in &self.options {
            if given(name) || in_env(name) {
                continue;
            }
            from_file.push(OsString::from(format!("--{name}")));
            if let Some(value) = value {
                from_file.push(OsString::from(value));
            }
        }
        // After the program name and the subcommand, if one was named.
        let at = if args
            .get(1)
            .is_some_and(|a| command.get_name() == a.to_string_lossy())
        {
            2
        } else {
            1
        };
        let mut merged = args;
        let rest = merged.split_off(at.min(merged.len()));
        merged.extend(from_file);
        merged.extend(rest);
        merged
    }
}

/// The hook an app setting names (`on-play`, ...).
fn hook_event(setting: &str) -> Option<HookEvent> {
    HookEvent::ALL
        .into_iter()
        .find(|event| event.action().replace('_', "-") == setting)
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn app_sections(value: &Value) -> anyhow::Result<BTreeMap<String, AppSection>> {
    let Value::Object(apps) = value else {
        bail!("`app` holds one section per app: [app.NAME]");
    };
    let mut sections = BTreeMap::new();
    for (app, settings) in apps {
        if !registry::is_valid_name(app) {
            bail!("[app.{app}]: {app:?} is not a valid app name");
        }
        let Value::Object(settings) = settings else {
            bail!("[app.{app}] must be a section");
        };
        let mut section = AppSection::default();
        for (key, value) in settings {
            match (key.replace('_', "-").as_str(), value) {
                ("hls-segment", Value::Number(n)) => {
                    let secs = n
                        .as_f64()
                        .filter(|s| *s >= 1.0)
                        .with_context(|| format!("[app.{app}] hls-segment: at least 1 second"))?;
                    section.hls_segment = Some(Duration::from_secs_f64(secs));
                }
                ("hls-window", Value::Number(n)) => {
                    let window = n.as_u64().filter(|w| *w >= 1).with_context(|| {
                        format!("[app.{app}] hls-window: a whole number of segments, 1 or more")
                    })?;
                    section.hls_window = Some(window as usize);
                }
                (name, value) => match (hook_event(name), value) {
                    (Some(event), Value::String(url)) => section.hooks.push((event, url.clone())),
                    (Some(_), _) => bail!("[app.{app}] {key}: a URL"),
                    (None, _) => bail!(
                        "[app.{app}] `{key}` is not an app setting (hls-segment, hls-window: numbers; on-publish, on-play, on-unpublish, on-stop, on-record-done, on-relay: URLs)"
                    ),
                },
            }
        }
        sections.insert(app.clone(), section);
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn command() -> Command {
        Command::new("origin")
            .arg(
                Arg::new("rtmp_addr")
                    .long("rtmp-addr")
                    .env("FERROLIVE_TEST_RTMP_ADDR"),
            )
            .arg(Arg::new("hls_segment").long("hls-segment"))
            .arg(Arg::new("apps").long("apps"))
            .arg(
                Arg::new("noauth")
                    .long("rtmp-noauth")
                    .action(ArgAction::SetTrue),
            )
            .arg(Arg::new("config").long("config"))
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn options_become_flags_before_the_command_line() {
        let file = ConfigFile::parse(
            "rtmp_addr = \"0.0.0.0:1\"\nhls-segment = 2.5\nrtmp-noauth = true\napps = [\"a\", \"b\"]\n",
            &command(),
        )
        .unwrap();
        let merged = file.merge_into(os(&["ferrolive", "origin", "--hls-segment=4"]), &command());
        assert_eq!(
            merged,
            os(&[
                "ferrolive",
                "origin",
                "--apps",
                "a,b",
                "--rtmp-noauth",
                "--rtmp-addr",
                "0.0.0.0:1",
                "--hls-segment=4"
            ])
        );
        // Without the subcommand named (the default command), after the program name.
        let merged = file.merge_into(os(&["ferrolive"]), &command());
        assert_eq!(merged[1], "--apps");
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let file = ConfigFile::parse("rtmp-addr = \"0.0.0.0:1\"\n", &command()).unwrap();
        // SAFETY: no other test reads or writes this variable.
        unsafe { std::env::set_var("FERROLIVE_TEST_RTMP_ADDR", "0.0.0.0:2") };
        let merged = file.merge_into(os(&["ferrolive", "origin"]), &command());
        unsafe { std::env::remove_var("FERROLIVE_TEST_RTMP_ADDR") };
        assert_eq!(merged, os(&["ferrolive", "origin"]));
    }

    #[test]
    fn app_sections_name_the_apps_and_their_hls() {
        let file = ConfigFile::parse(
            "[app.live]\n[app.game]\nhls-segment = 4\nhls_window = 10\non-play = \"http://h/p\"\n",
            &command(),
        )
        .unwrap();
        assert_eq!(file.apps["live"], AppSection::default());
        assert_eq!(
            file.apps["game"],
            AppSection {
                hls_segment: Some(Duration::from_secs(4)),
                hls_window: Some(10),
                hooks: vec![(HookEvent::Play, "http://h/p".into())],
            }
        );
        let merged = file.merge_into(os(&["ferrolive", "origin"]), &command());
        assert_eq!(merged, os(&["ferrolive", "origin", "--apps", "game,live"]));
    }

    #[test]
    fn mistakes_are_named() {
        let error = |text: &str| format!("{:#}", ConfigFile::parse(text, &command()).unwrap_err());
        assert!(
            error("rtmp-adr = 1\n").contains("`rtmp-adr` is not an option of `ferrolive origin`")
        );
        assert!(error("config = \"x\"\n").contains("`config` is not an option"));
        assert!(error("rtmp-noauth = 1\n").contains("switch"));
        assert!(error("rtmp-addr = { a = 1 }\n").contains("a string, a number or a list"));
        assert!(error("[app.game]\nhls-segment = 0.5\n").contains("at least 1 second"));
        assert!(error("[app.game]\nrecord = true\n").contains("not an app setting"));
        assert!(error("[app.game]\non-stop = 1\n").contains("on-stop: a URL"));
        assert!(error("[app.\"a/b\"]\n").contains("not a valid app name"));
        assert!(error("rtmp-addr = \n").contains("line 1"));
    }
}
