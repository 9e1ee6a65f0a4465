//! The OpenAPI 3.0 description of the REST API, served at `/api/v1/openapi.json`.

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn livego_response(description: &str, data_schema: Value) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": {
            "type": "object",
            "required": ["status", "data"],
            "properties": {
                "status": { "type": "integer", "description": "The HTTP status code, repeated." },
                "data": data_schema
            }
        } } }
    })
}

fn livego_error(description: &str) -> Value {
    livego_response(
        description,
        json!({ "type": "string", "description": "What went wrong." }),
    )
}

fn livego_control(summary: &str, description: &str, path: &str, ok: &str, with_429: bool) -> Value {
    let mut responses = json!({
        "200": livego_response(ok, json!({ "type": "string" })),
        "400": livego_error(&format!("`room` missing (data: `url: {path}?room=<ROOM_NAME>`) or not a valid room name.")),
        "401": livego_error("Missing or wrong credentials."),
        "503": livego_error("The registry is unreachable (data: `registry unavailable: <reason>`).")
    });
    if with_429 {
        responses["429"] =
            livego_error("Too many key creations from this client address; see `Retry-After`.");
    } else {
        responses["404"] = livego_error("No such room (data: `room not found`).");
    }
    let operation = json!({
        "tags": ["livego"],
        "summary": summary,
        "description": description,
        "parameters": [
            { "$ref": "#/components/parameters/RoomQuery" },
            { "$ref": "#/components/parameters/JwtQuery" }
        ],
        "responses": responses
    });
    let mut post = operation.clone();
    post["operationId"] = json!(format!(
        "{}Post",
        path.trim_start_matches('/').replace('/', "_")
    ));
    let mut get = operation;
    get["operationId"] = json!(path.trim_start_matches('/').replace('/', "_"));
    json!({ "get": get, "post": post })
}

fn v1_room_param() -> Value {
    json!({ "$ref": "#/components/parameters/RoomPath" })
}

const PLAY_SELECTION: &str =
    "The edge is chosen among live edge heartbeats (role `edge`): those in \
    the `region` hint if any is there, then the least loaded (fewest viewers over all its streams, \
    then lowest egress rate, then node id). With no edge registered the URLs point at the origin \
    holding the room's stream lease.";

fn play_errors() -> Value {
    json!({
        "400": error_response("Invalid room name or query."),
        "401": error_response("Missing or wrong credentials."),
        "404": error_response("The room is not live (`room is not live`)."),
        "503": error_response("The registry is unreachable.")
    })
}

/// `GET /api/v1/rooms/{room}/play.<ext>`: a redirect to one of the play URLs.
fn play_redirect(ext: &str, what: &str, field: &str) -> Value {
    let mut responses = play_errors();
    responses["302"] = json!({
        "description": format!("Redirect to the {what} URL (the `{field}` field of `PlayUrls`, also in the body)."),
        "headers": { "Location": { "description": format!("The {what} URL."), "schema": { "type": "string" } } },
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/PlayUrls" } } }
    });
    json!({
        "parameters": [ v1_room_param(), { "$ref": "#/components/parameters/RegionQuery" } ],
        "get": {
            "tags": ["rooms"],
            "operationId": format!("playRedirect{}", ext[..1].to_uppercase() + &ext[1..]),
            "summary": format!("Redirect a player to the room's {what} URL on the best edge"),
            "description": PLAY_SELECTION,
            "responses": responses
        }
    })
}

/// The document.
pub fn document() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "ferrolive control API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Publish keys and live rooms. The livego-compatible endpoints \
                (`/control/*`, `/stat/livestat`) answer `{\"status\": <code>, \"data\": ...}`; \
                `/api/v1` answers resources and `{\"error\": \"...\"}` on failure. When an admin \
                token or JWT secret is configured every endpoint except `/healthz`, `/readyz` and \
                this document needs `Authorization: Bearer <admin token or HS256 JWT>` (livego \
                clients may pass the JWT as `?jwt=`). The same operations are available over gRPC \
                (`ferrolive.v1.Control`) on the same port."
        },
        "tags": [
            { "name": "livego", "description": "livego-compatible endpoints" },
            { "name": "rooms", "description": "Rooms and live streams" },
            { "name": "health", "description": "Probes" }
        ],
        "security": [ { "bearerAuth": [] }, { "jwtQuery": [] } ],
        "paths": {
            "/control/get": livego_control(
                "Get a room's channel key",
                "Returns the room's channel key, creating the room and a key if it has none \
                 (key creation is rate-limited per client address). Publish with \
                 `rtmp://<origin>:1935/live/<key>`; viewers play `live/<room>`.",
                "/control/get", "The channel key.", true),
            "/control/reset": livego_control(
                "Reset a room's channel key",
                "Issues a new channel key; the old key stops working at once (rate-limited per \
                 client address).",
                "/control/reset", "The new channel key.", true),
            "/control/delete": livego_control(
                "Delete a room",
                "Deletes the room and its key and disconnects its publisher if it is live.",
                "/control/delete", "`Ok`.", false),
            "/stat/livestat": {
                "get": {
                    "tags": ["livego"],
                    "operationId": "stat_livestat",
                    "summary": "Live publishers and players (livego format)",
                    "parameters": [ { "$ref": "#/components/parameters/JwtQuery" } ],
                    "responses": {
                        "200": livego_response("Publishers (one per live stream) and players (one per viewer).", json!({
                            "type": "object",
                            "required": ["publishers", "players"],
                            "properties": {
                                "publishers": { "type": "array", "items": { "$ref": "#/components/schemas/LivegoStream" } },
                                "players": { "type": "array", "items": { "$ref": "#/components/schemas/LivegoStream" } }
                            }
                        })),
                        "401": livego_error("Missing or wrong credentials."),
                        "503": livego_error("The registry is unreachable.")
                    }
                }
            },
            "/api/v1/rooms": {
                "get": {
                    "tags": ["rooms"],
                    "operationId": "listRooms",
                    "summary": "List live rooms",
                    "parameters": [ {
                        "name": "all", "in": "query", "required": false,
                        "description": "Also list rooms that have a key but are not live.",
                        "schema": { "type": "boolean", "default": false }
                    } ],
                    "responses": {
                        "200": {
                            "description": "The rooms, by name.",
                            "content": { "application/json": { "schema": {
                                "type": "object", "required": ["rooms"],
                                "properties": { "rooms": { "type": "array", "items": { "$ref": "#/components/schemas/Room" } } }
                            } } }
                        },
                        "400": error_response("Bad query parameter."),
                        "401": error_response("Missing or wrong credentials."),
                        "503": error_response("The registry is unreachable.")
                    }
                }
            },
            "/api/v1/rooms/{room}": {
                "parameters": [ v1_room_param() ],
                "get": {
                    "tags": ["rooms"],
                    "operationId": "getRoom",
                    "summary": "One room, live or not",
                    "responses": {
                        "200": { "description": "The room.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Room" } } } },
                        "400": error_response("Invalid room name."),
                        "401": error_response("Missing or wrong credentials."),
                        "404": error_response("The room has no key and is not live."),
                        "503": error_response("The registry is unreachable.")
                    }
                },
                "delete": {
                    "tags": ["rooms"],
                    "operationId": "deleteRoom",
                    "summary": "Delete a room and its key (and disconnect its publisher)",
                    "responses": {
                        "200": { "description": "Deleted.", "content": { "application/json": { "schema": {
                            "type": "object", "required": ["room", "deleted", "kicked"],
                            "properties": {
                                "room": { "type": "string" },
                                "deleted": { "type": "boolean" },
                                "kicked": { "type": "boolean", "description": "Whether a live publisher was told to disconnect." }
                            }
                        } } } },
                        "400": error_response("Invalid room name."),
                        "401": error_response("Missing or wrong credentials."),
                        "404": error_response("No such room."),
                        "503": error_response("The registry is unreachable.")
                    }
                }
            },
            "/api/v1/rooms/{room}/key": {
                "parameters": [ v1_room_param() ],
                "post": {
                    "tags": ["rooms"],
                    "operationId": "rotateKey",
                    "summary": "Rotate the room's channel key (the old key stops working at once)",
                    "responses": {
                        "200": { "description": "The new key.", "content": { "application/json": { "schema": {
                            "type": "object", "required": ["room", "key"],
                            "properties": { "room": { "type": "string" }, "key": { "type": "string" } }
                        } } } },
                        "400": error_response("Invalid room name."),
                        "401": error_response("Missing or wrong credentials."),
                        "429": error_response("Too many key creations from this client address; see `Retry-After`."),
                        "503": error_response("The registry is unreachable.")
                    }
                }
            },
            "/api/v1/rooms/{room}/kick": {
                "parameters": [ v1_room_param() ],
                "post": {
                    "tags": ["rooms"],
                    "operationId": "kickPublisher",
                    "summary": "Disconnect the room's publisher",
                    "description": "The origin disconnects the publisher at its next lease refresh (within seconds).",
                    "responses": {
                        "202": { "description": "The origin was told to disconnect the publisher.", "content": { "application/json": { "schema": {
                            "type": "object", "required": ["room", "kicked"],
                            "properties": { "room": { "type": "string" }, "kicked": { "type": "boolean" } }
                        } } } },
                        "400": error_response("Invalid room name."),
                        "401": error_response("Missing or wrong credentials."),
                        "404": error_response("The room is not live."),
                        "503": error_response("The registry is unreachable.")
                    }
                }
            },
            "/api/v1/rooms/{room}/play": {
                "parameters": [ v1_room_param(), { "$ref": "#/components/parameters/RegionQuery" } ],
                "get": {
                    "tags": ["rooms"],
                    "operationId": "playUrls",
                    "summary": "Play URLs for a live room on the best edge",
                    "description": PLAY_SELECTION,
                    "responses": {
                        "200": { "description": "The play URLs.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/PlayUrls" } } } },
                        "400": error_response("Invalid room name or query."),
                        "401": error_response("Missing or wrong credentials."),
                        "404": error_response("The room is not live (`room is not live`)."),
                        "503": error_response("The registry is unreachable.")
                    }
                }
            },
            "/api/v1/rooms/{room}/play.flv": play_redirect("flv", "HTTP-FLV", "flv"),
            "/api/v1/rooms/{room}/play.m3u8": play_redirect("m3u8", "HLS", "hls"),
            "/api/v1/rooms/{room}/play.rtmp": play_redirect("rtmp", "RTMP", "rtmp"),
            "/api/v1/openapi.json": {
                "get": {
                    "tags": ["health"],
                    "operationId": "openapi",
                    "summary": "This document",
                    "security": [],
                    "responses": { "200": { "description": "OpenAPI 3.0 document.", "content": { "application/json": { "schema": { "type": "object" } } } } }
                }
            },
            "/healthz": {
                "get": {
                    "tags": ["health"],
                    "operationId": "healthz",
                    "summary": "Liveness: the process serves requests",
                    "security": [],
                    "responses": { "200": { "description": "Alive.", "content": { "text/plain": { "schema": { "type": "string" } } } } }
                }
            },
            "/readyz": {
                "get": {
                    "tags": ["health"],
                    "operationId": "readyz",
                    "summary": "Readiness: the registry answers",
                    "security": [],
                    "responses": {
                        "200": { "description": "Ready.", "content": { "text/plain": { "schema": { "type": "string" } } } },
                        "503": { "description": "Not ready, with the reason.", "content": { "text/plain": { "schema": { "type": "string" } } } }
                    }
                }
            }
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http", "scheme": "bearer",
                    "description": "The admin token, or an HS256 JWT signed with the configured secret (`exp`/`nbf` honoured)."
                },
                "jwtQuery": {
                    "type": "apiKey", "in": "query", "name": "jwt",
                    "description": "livego-style: an HS256 JWT as the `jwt` query parameter."
                }
            },
            "parameters": {
                "RoomQuery": {
                    "name": "room", "in": "query", "required": true,
                    "description": "Room name: 1 to 64 characters from A-Z a-z 0-9 - _ . (not starting with `.` or `sk_`).",
                    "schema": { "$ref": "#/components/schemas/RoomName" }
                },
                "RoomPath": {
                    "name": "room", "in": "path", "required": true,
                    "description": "Room name.",
                    "schema": { "$ref": "#/components/schemas/RoomName" }
                },
                "RegionQuery": {
                    "name": "region", "in": "query", "required": false,
                    "description": "The player's region: edges heartbeating this region are preferred when there are any.",
                    "schema": { "type": "string" }
                },
                "JwtQuery": {
                    "name": "jwt", "in": "query", "required": false,
                    "description": "livego-style HS256 JWT (instead of the Authorization header).",
                    "schema": { "type": "string" }
                }
            },
            "schemas": {
                "RoomName": { "type": "string", "minLength": 1, "maxLength": 64, "pattern": "^(?!\\.)(?!sk_)[A-Za-z0-9._-]{1,64}$" },
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": { "error": { "type": "string" } }
                },
                "LivegoStream": {
                    "type": "object",
                    "description": "livego's stream statistics entry; counters this cluster does not track are 0.",
                    "properties": {
                        "key": { "type": "string", "description": "`app/room`." },
                        "url": { "type": "string" },
                        "stream_id": { "type": "integer" },
                        "video_total_bytes": { "type": "integer" },
                        "video_speed": { "type": "integer", "description": "Bytes per millisecond (publishers: whole ingest rate)." },
                        "audio_total_bytes": { "type": "integer" },
                        "audio_speed": { "type": "integer" }
                    }
                },
                "Origin": {
                    "type": "object", "required": ["node_id", "rtmp", "http"],
                    "properties": {
                        "node_id": { "type": "string" },
                        "region": { "type": "string", "nullable": true },
                        "rtmp": { "type": "string", "description": "`host:port` of the origin's RTMP listener." },
                        "http": { "type": "string", "description": "`host:port` of the origin's player HTTP listener." }
                    }
                },
                "PlayUrls": {
                    "type": "object", "required": ["room", "node_id", "rtmp", "flv", "hls"],
                    "properties": {
                        "room": { "type": "string" },
                        "node_id": { "type": "string", "description": "The edge (or, without edges, the origin) the URLs point at." },
                        "region": { "type": "string", "nullable": true, "description": "That node's region (null for an origin without a heartbeat)." },
                        "rtmp": { "type": "string", "example": "rtmp://edge1.example:1935/live/movie" },
                        "flv": { "type": "string", "example": "http://edge1.example:8080/live/movie.flv" },
                        "hls": { "type": "string", "example": "http://edge1.example:8080/live/movie.m3u8" }
                    }
                },
                "Room": {
                    "type": "object",
                    "required": ["room", "app", "live", "has_key", "bitrate_kbps", "uptime_s", "viewers", "viewers_by_node"],
                    "properties": {
                        "room": { "type": "string" },
                        "app": { "type": "string", "example": "live" },
                        "live": { "type": "boolean" },
                        "has_key": { "type": "boolean" },
                        "key_created_ms": { "type": "integer", "nullable": true, "description": "Unix ms the current key was issued." },
                        "origin": { "allOf": [ { "$ref": "#/components/schemas/Origin" } ], "nullable": true },
                        "video_codec": { "type": "string", "nullable": true },
                        "audio_codec": { "type": "string", "nullable": true },
                        "width": { "type": "integer", "nullable": true },
                        "height": { "type": "integer", "nullable": true },
                        "bitrate_kbps": { "type": "integer" },
                        "started_at_ms": { "type": "integer", "nullable": true },
                        "uptime_s": { "type": "integer" },
                        "viewers": { "type": "integer", "description": "Viewers on all nodes." },
                        "viewers_by_node": { "type": "object", "additionalProperties": { "type": "integer" } }
                    }
                }
            }
        }
    })
}
