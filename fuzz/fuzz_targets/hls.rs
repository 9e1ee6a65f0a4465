//! Publisher bytes through the hub (batching, GOP cache, segment marks) into the HLS
//! packager and an HTTP-TS stream: whatever the payloads and timestamps, nothing panics,
//! every playlist and segment stays consistent and the HTTP-TS is whole TS packets. A valid H.264 and AAC configuration goes first so the input
//! reaches the muxer; after that each record is
//! `kind (0 audio, 1 video, 2 metadata, 3 new publisher) | ts delta u16 LE | len u16 LE | payload`.
#![no_main]

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use media::hls::{HlsConfig, HlsPackager};
use media::hub::{Audience, Delivery, Hub, HubConfig, Subscriber};
use media::frame::MediaKind;
use media::ts::TsStream;

const AVC_HEADER: &[u8] = &[
    0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0x00, 0x1A, 0x67, 0x64, 0x00,
    0x1F, 0xAC, 0xD9, 0x40, 0x50, 0x05, 0xBB, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00,
    0x00, 0x03, 0x03, 0xC0, 0xF1, 0x83, 0x19, 0x60, 0x01, 0x00, 0x06, 0x68, 0xEB, 0xE3, 0xCB,
    0x22, 0xC0,
];
const AAC_HEADER: &[u8] = &[0xAF, 0x00, 0x12, 0x10];

fn drain(sub: &mut Subscriber, packager: &mut HlsPackager, http_ts: &mut TsStream) {
    let mut out = BytesMut::new();
    while let Some(delivery) = sub.try_next() {
        match delivery {
            Delivery::Frame(frame) => {
                packager.push(&frame);
                http_ts.push(&frame, &mut out);
            }
            Delivery::Skipped(_) => {}
            Delivery::End => {
                packager.end();
                http_ts.finish(&mut out);
                break;
            }
        }
    }
    assert_eq!(out.len() % 188, 0, "whole TS packets over HTTP-TS");
}

fuzz_target!(|data: &[u8]| {
    let hub = Hub::new(HubConfig {
        backlog: 16,
        ..HubConfig::default()
    });
    let now = Instant::now();
    let mut publisher = hub.publish("live/fuzz", now).unwrap();
    let mut sub = hub.subscribe("live/fuzz", Audience::Viewer).unwrap();
    let config = HlsConfig {
        window: 3,
        retain_extra: 1,
        ..HlsConfig::default()
    };
    let mut packager = HlsPackager::new(config, true, true);
    let mut http_ts = TsStream::new();
    let _ = publisher.push(MediaKind::Video, 0, Bytes::from_static(AVC_HEADER), now);
    let _ = publisher.push(MediaKind::Audio, 0, Bytes::from_static(AAC_HEADER), now);
    let mut ts = 0u32;
    let mut rest = data;
    while rest.len() >= 5 {
        let kind = rest[0];
        ts = ts.wrapping_add(u32::from(u16::from_le_bytes([rest[1], rest[2]])));
        let len = usize::from(u16::from_le_bytes([rest[3], rest[4]])).min(rest.len() - 5);
        let payload = Bytes::copy_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        let kind = match kind % 4 {
            0 => MediaKind::Audio,
            1 => MediaKind::Video,
            2 => MediaKind::Metadata,
            _ => {
                // A publisher takes over (the old one vanished): a new generation.
                drop(publisher);
                publisher = hub.publish("live/fuzz", now + std::time::Duration::from_secs(60)).unwrap();
                continue;
            }
        };
        let _ = publisher.push(kind, ts, payload, now);
        drain(&mut sub, &mut packager, &mut http_ts);
        let playlist = packager.playlist(|seq| format!("{seq}.ts"));
        assert!(playlist.starts_with("#EXTM3U\n"));
        for segment in packager.listed() {
            assert!(packager.segment(segment.sequence).is_some());
            assert_eq!(segment.data.len() % 188, 0, "whole TS packets");
        }
    }
    publisher.finish(&hub);
    drain(&mut sub, &mut packager, &mut http_ts);
    let _ = packager.playlist(|seq| format!("{seq}.ts"));
});
