//! Names of apps and rooms: one rule for every protocol, the registry and the control API,
//! so that a room the control API creates is a room every player URL can name, and a name
//! any URL carries is safe to use as a key, a label or a file name.

/// Longest app or room name accepted.
pub const MAX_NAME: usize = 64;

/// Every channel key starts with this; no room name does, so a publish name is never both.
pub const KEY_PREFIX: &str = "sk_";

/// An app or room name: 1 to [`MAX_NAME`] bytes of ASCII letters, digits and `-_.~` (the
/// characters no URL needs to escape, so no path trick fits in them), not starting with a
/// dot.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
}

/// A room name: a valid name that does not start with [`KEY_PREFIX`].
pub fn is_valid_room(room: &str) -> bool {
    is_valid_name(room) && !room.starts_with(KEY_PREFIX)
}

/// The hub key of `app`/`room`, or `None` when either is not a valid name.
pub fn stream_key(app: &str, room: &str) -> Option<String> {
    (is_valid_name(app) && is_valid_room(room)).then(|| format!("{app}/{room}"))
}

/// The app of a hub key made by [`stream_key`].
pub fn app_of(stream_key: &str) -> &str {
    stream_key
        .split_once('/')
        .map_or(stream_key, |(app, _)| app)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_checked() {
        assert_eq!(
            stream_key("live", "room-1_a.b~").as_deref(),
            Some("live/room-1_a.b~")
        );
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "a%2f",
            "a\n",
            &"x".repeat(129),
        ] {
            assert_eq!(stream_key("live", bad), None, "{bad:?}");
        }
        assert_eq!(stream_key("", "room"), None);
        assert_eq!(app_of("game/room"), "game");
    }

    #[test]
    fn rooms_and_keys_never_share_a_name() {
        assert!(is_valid_room(&"x".repeat(MAX_NAME)));
        assert!(!is_valid_room(&"x".repeat(MAX_NAME + 1)));
        assert!(!is_valid_room("sk_abc"));
        assert!(
            is_valid_name("sk_abc"),
            "an app may be called anything valid"
        );
        assert!(is_valid_room("movie~2"));
        assert_eq!(stream_key("live", "sk_3kXQ"), None);
    }
}
