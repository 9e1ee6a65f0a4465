//! The console every node serves on its player port: `/` lists the node's live streams
//! (from `/api/streams`) with a player for any of them, `/play/APP/ROOM` is a bare player
//! to embed. The pages are the project's own HTML, CSS and JavaScript, compiled in. The
//! player libraries (hls.js, mpegts.js) come from a CDN, pinned and with their integrity
//! hashes, or from `--console-assets DIR` for networks without the internet.

use std::fmt::Write;
use std::path::Path;
use std::time::Instant;

use super::respond::Reply;
use crate::json::string as json_string;
use crate::metrics::Protocol;
use crate::Node;

const INDEX: &str = include_str!("../../console/index.html");
const PLAY: &str = include_str!("../../console/play.html");
const SCRIPT: &str = include_str!("../../console/console.js");
const STYLE: &str = include_str!("../../console/console.css");

/// A player library: its file name (under `--console-assets`, and `/console/lib/`), where
/// the CDN has it, and its subresource integrity (SHA-384 of the file npm installs).
struct Library {
    file: &'static str,
    cdn: &'static str,
    integrity: &'static str,
}

const LIBRARIES: [Library; 2] = [
    Library {
        file: "hls.min.js",
        cdn: "https://cdn.jsdelivr.net/npm/hls.js@1.7.4/dist/hls.min.js",
        integrity: "sha384-p9vgU/7IYJWd3I4STrtqxqR/2cAQlhIX7D/HrTnIMEjjcUox165b7se7sxmm3zDg",
    },
    Library {
        file: "mpegts.js",
        cdn: "https://cdn.jsdelivr.net/npm/mpegts.js@1.8.2/dist/mpegts.js",
        integrity: "sha384-sQp+4cJv0jChNCYvgy6W0RSfQZB/w6d3ZTDoIBlY4Uorfw4PLS56T2yM2z47bSkl",
    },
];

/// The two pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Index,
    Play,
}

/// `page`, loading the player libraries from the CDN or, with `assets`, from this node.
pub(super) fn page(page: Page, assets: Option<&Path>) -> Reply {
    let mut libraries = String::new();
    for library in &LIBRARIES {
        let _ = match assets {
            Some(_) => writeln!(
                libraries,
                "<script src=\"/console/lib/{}\"></script>",
                library.file
            ),
            None => writeln!(
                libraries,
                "<script src=\"{}\" integrity=\"{}\" crossorigin=\"anonymous\"></script>",
                library.cdn, library.integrity
            ),
        };
    }
    let html = match page {
        Page::Index => INDEX,
        Page::Play => PLAY,
    };
    Reply {
        content_type: "text/html; charset=utf-8",
        ..Reply::text("200 OK", html.replace("<!--LIBS-->", &libraries))
    }
}

/// One of the console's own files (`/console/console.js`, `/console/console.css`).
pub(super) fn own_file(name: &str) -> Reply {
    let (content_type, body) = match name {
        "console.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "console.css" => ("text/css; charset=utf-8", STYLE),
        _ => return Reply::not_found("file"),
    };
    Reply {
        content_type,
        ..Reply::text("200 OK", body)
    }
}

/// A player library from `--console-assets` (`/console/lib/{file}`), only the ones the
/// pages load.
pub(super) async fn library(name: &str, assets: Option<&Path>) -> Reply {
    let known = LIBRARIES.iter().find(|l| l.file == name);
    let (Some(library), Some(dir)) = (known, assets) else {
        return Reply::not_found("library");
    };
    match tokio::fs::read(dir.join(library.file)).await {
        Ok(bytes) => Reply {
            content_type: "text/javascript; charset=utf-8",
            ..Reply::text("200 OK", bytes)
        },
        Err(_) => Reply::not_found("library"),
    }
}

/// `/api/streams`: the node's live streams, as the console shows them.
pub(super) fn streams(node: &Node) -> Reply {
    let now = Instant::now();
    let mut streams = node.hub.list();
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = format!(
        "{{\"rtmp_port\":{},\"streams\":[",
        node.config.rtmp_addr.port()
    );
    for (i, s) in streams.iter().enumerate() {
        let (app, room) = s.name.split_once('/').unwrap_or(("", &s.name));
        let text = |v: Option<&str>| v.map_or("null".to_owned(), json_string);
        let number = |v: Option<u32>| v.map_or("null".to_owned(), |n| n.to_string());
        let viewers = node.metrics.viewers_of(&s.name);
        let by_protocol: Vec<String> = Protocol::ALL
            .iter()
            .map(|p| format!("{}:{}", json_string(p.label()), viewers[p.index()]))
            .collect();
        let _ = write!(
            out,
            "{}{{\"stream\":{},\"app\":{},\"room\":{},\"publishing\":{},\"video\":{},\"audio\":{},\
             \"width\":{},\"height\":{},\"b_frames\":{},\"bytes_in\":{},\"uptime_ms\":{},\"viewers\":{{{}}},\"relays\":{}}}",
            if i > 0 { "," } else { "" },
            json_string(&s.name),
            json_string(app),
            json_string(room),
            s.has_publisher,
            text(s.stats.video_codec),
            text(s.stats.audio_codec),
            number(s.stats.width),
            number(s.stats.height),
            s.stats.b_frames,
            s.stats.bytes_in,
            now.saturating_duration_since(s.created).as_millis(),
            by_protocol.join(","),
            s.relays
        );
    }
    out.push_str("]}\n");
    Reply {
        content_type: "application/json",
        ..Reply::text("200 OK", out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_load_the_libraries_from_the_cdn_or_this_node() {
        let cdn = page(Page::Index, None);
        let html = String::from_utf8(cdn.body.to_vec()).unwrap();
        for library in &LIBRARIES {
            assert!(html.contains(library.cdn) && html.contains(library.integrity));
        }
        let local = page(Page::Play, Some(Path::new("/srv/assets")));
        let html = String::from_utf8(local.body.to_vec()).unwrap();
        assert!(html.contains("src=\"/console/lib/hls.min.js\"") && !html.contains("cdn."));
    }
}
