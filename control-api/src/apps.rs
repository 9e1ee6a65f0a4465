//! Which app a request acts on. Nodes publish a room under whatever app the publisher
//! uses (`rtmp://host/{app}/{key}` makes the stream `{app}/{room}`), so every operation on
//! a live stream needs the app as well as the room: `?app=` over REST, `app` over gRPC,
//! `live` when the request names none. Which apps exist is configurable (`--apps`); a
//! request naming another is refused rather than looked up in vain.

/// The app a request means when it names none: the one the README's publish and play URLs
/// use (`rtmp://host/live/{key}`), and livego's only app.
pub const DEFAULT_APP: &str = "live";

/// Why a requested app is refused (400 / INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    #[error(
        "invalid app name: use 1 to 64 characters from A-Z a-z 0-9 - _ . ~ (not starting with '.')"
    )]
    InvalidName,
    #[error("unknown app '{app}': this server's apps are {served}")]
    NotServed { app: String, served: String },
}

/// An app a request may act on: a valid name and one of the configured apps. Only
/// [`Apps::resolve`] makes one, so an operation that takes an `App` cannot be handed a
/// name nobody checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App(String);

impl App {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The apps requests may name (`--apps`).
#[derive(Debug, Clone)]
pub struct Apps {
    /// Empty: any valid app name.
    served: Vec<String>,
}

impl Apps {
    /// `served` empty: any valid app name.
    pub fn new(served: &[String]) -> Self {
        Apps {
            served: served.to_vec(),
        }
    }

    /// The app a request without one acts on: [`DEFAULT_APP`], unless the configured apps
    /// leave it out; then the first of them, since a default no node serves would make
    /// every request that names no app fail.
    pub fn default_app(&self) -> &str {
        match self.served.first() {
            Some(first) if !self.served.iter().any(|app| app == DEFAULT_APP) => first,
            _ => DEFAULT_APP,
        }
    }

    /// The app a request names (`None` or empty: [`Apps::default_app`]), if it is a valid
    /// name and one of the configured apps.
    pub fn resolve(&self, requested: Option<&str>) -> Result<App, AppError> {
        let app = requested
            .filter(|app| !app.is_empty())
            .unwrap_or_else(|| self.default_app());
        if !registry::is_valid_name(app) {
            return Err(AppError::InvalidName);
        }
        if !self.served.is_empty() && !self.served.iter().any(|served| served == app) {
            return Err(AppError::NotServed {
                app: app.to_owned(),
                served: self.served.join(", "),
            });
        }
        Ok(App(app.to_owned()))
    }
}

/// A stream's app and room (`game/movie` is `("game", "movie")`); `None` for a name that is
/// not a valid app and room, which no request could name.
pub fn split_stream(stream: &str) -> Option<(&str, &str)> {
    let (app, room) = stream.split_once('/')?;
    (registry::is_valid_name(app) && registry::is_valid_room(room)).then_some((app, room))
}

/// The registry's name of the stream `app/room`.
pub fn stream_of(app: &App, room: &str) -> String {
    format!("{app}/{room}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps(list: &[&str]) -> Apps {
        Apps::new(&list.iter().map(|app| app.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn any_valid_app_and_live_by_default() {
        let apps = apps(&[]);
        assert_eq!(apps.resolve(None).unwrap().as_str(), "live");
        assert_eq!(apps.resolve(Some("")).unwrap().as_str(), "live");
        assert_eq!(apps.resolve(Some("game")).unwrap().as_str(), "game");
        for bad in [".hidden", "a/b", "a b", "é", &"x".repeat(65)] {
            assert_eq!(apps.resolve(Some(bad)), Err(AppError::InvalidName), "{bad}");
        }
    }

    #[test]
    fn only_the_listed_apps_with_a_list() {
        let listed = apps(&["game", "live"]);
        assert_eq!(listed.resolve(None).unwrap().as_str(), "live");
        assert_eq!(listed.resolve(Some("game")).unwrap().as_str(), "game");
        assert_eq!(
            listed.resolve(Some("music")).unwrap_err().to_string(),
            "unknown app 'music': this server's apps are game, live"
        );
        assert_eq!(listed.resolve(Some("a/b")), Err(AppError::InvalidName));
        // Without `live` among them, the first listed app is the default.
        let without_live = apps(&["game", "music"]);
        assert_eq!(without_live.default_app(), "game");
        assert_eq!(without_live.resolve(None).unwrap().as_str(), "game");
        assert_eq!(without_live.resolve(Some("")).unwrap().as_str(), "game");
        assert!(matches!(
            without_live.resolve(Some("live")),
            Err(AppError::NotServed { .. })
        ));
    }

    #[test]
    fn streams_split_into_app_and_room() {
        assert_eq!(split_stream("game/movie"), Some(("game", "movie")));
        assert_eq!(split_stream("live/movie"), Some(("live", "movie")));
        for bad in [
            "movie",
            "/movie",
            "live/",
            "live/a/b",
            "live/sk_key",
            ".x/movie",
        ] {
            assert_eq!(split_stream(bad), None, "{bad}");
        }
    }
}
