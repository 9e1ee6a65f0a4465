//! Which app a request acts on. Nodes publish a room under whatever app the publisher
//! uses (`rtmp://host/{app}/{key}` makes the stream `{app}/{room}`), so every operation on
//! a live stream needs the app as well as the room: `?app=` over REST, `app` over gRPC,
//! `live` when the request names none.

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
}

/// An app a request may act on: a valid app name. Only [`Apps::resolve`] makes one, so an
/// operation that takes an `App` cannot be handed a name nobody checked.
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

/// The apps requests may name.
#[derive(Debug, Clone, Default)]
pub struct Apps {}

impl Apps {
    /// The app a request without one acts on.
    pub fn default_app(&self) -> &str {
        DEFAULT_APP
    }

    /// The app a request names (`None` or empty: [`Apps::default_app`]), if it is a valid
    /// name.
    pub fn resolve(&self, requested: Option<&str>) -> Result<App, AppError> {
        let app = requested
            .filter(|app| !app.is_empty())
            .unwrap_or_else(|| self.default_app());
        if !registry::is_valid_name(app) {
            return Err(AppError::InvalidName);
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

    #[test]
    fn any_valid_app_and_live_by_default() {
        let apps = Apps::default();
        assert_eq!(apps.resolve(None).unwrap().as_str(), "live");
        assert_eq!(apps.resolve(Some("")).unwrap().as_str(), "live");
        assert_eq!(apps.resolve(Some("game")).unwrap().as_str(), "game");
        for bad in [".hidden", "a/b", "a b", "é", &"x".repeat(65)] {
            assert_eq!(apps.resolve(Some(bad)), Err(AppError::InvalidName), "{bad}");
        }
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
