//! The `Transport` header (RFC 2326 12.39): how a track's RTP travels, as a client asks
//! for it in SETUP and as the server answers.
//!
//! Only unicast RTP/AVP is modelled, over UDP (`client_port`, `server_port`) or interleaved
//! in the RTSP connection (`interleaved`). Parameters this server has no use for
//! (`destination`, `ttl`, `layers`, ...) are ignored on reading.

use std::fmt;

/// How RTP packets travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lower {
    /// Separate UDP datagrams (`RTP/AVP`, `RTP/AVP/UDP`).
    Udp,
    /// Interleaved in the RTSP connection (`RTP/AVP/TCP`).
    Tcp,
}

/// One transport specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    pub lower: Lower,
    /// False for `multicast`, which this server does not offer.
    pub unicast: bool,
    /// RTP and RTCP interleaved channels (TCP).
    pub interleaved: Option<(u8, u8)>,
    /// The client's RTP and RTCP ports (UDP).
    pub client_port: Option<(u16, u16)>,
    /// The server's RTP and RTCP ports (UDP answers).
    pub server_port: Option<(u16, u16)>,
    pub ssrc: Option<u32>,
    /// `mode=record`: the client will send media (a publisher).
    pub record: bool,
}

impl Transport {
    /// Read one specification (`RTP/AVP/TCP;unicast;interleaved=0-1`). `None` for other
    /// protocols (`RTP/SAVP`, raw) and for malformed parameters.
    pub fn parse(spec: &str) -> Option<Transport> {
        let mut parts = spec.split(';').map(str::trim);
        let lower = match parts.next()?.to_ascii_uppercase().as_str() {
            "RTP/AVP" | "RTP/AVP/UDP" => Lower::Udp,
            "RTP/AVP/TCP" => Lower::Tcp,
            _ => return None,
        };
        let mut transport = Transport {
            lower,
            unicast: true,
            interleaved: None,
            client_port: None,
            server_port: None,
            ssrc: None,
            record: false,
        };
        for parameter in parts {
            let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "unicast" => transport.unicast = true,
                "multicast" => transport.unicast = false,
                "interleaved" => transport.interleaved = Some(pair(value)?),
                "client_port" => transport.client_port = Some(pair(value)?),
                "server_port" => transport.server_port = Some(pair(value)?),
                "ssrc" => transport.ssrc = Some(u32::from_str_radix(value.trim(), 16).ok()?),
                "mode" => transport.record = value.trim_matches('"').eq_ignore_ascii_case("record"),
                _ => {}
            }
        }
        Some(transport)
    }

    /// The first specification of a `Transport` header (alternatives are separated by
    /// commas, in the client's order of preference) that this server can serve: unicast,
    /// interleaved over TCP or with client ports over UDP.
    pub fn choose(header: &str) -> Option<Transport> {
        header.split(',').filter_map(Transport::parse).find(|t| {
            t.unicast
                && match t.lower {
                    Lower::Tcp => true,
                    Lower::Udp => t.client_port.is_some(),
                }
        })
    }
}

/// `a-b`, or `a` meaning `a-(a+1)`.
fn pair<T: std::str::FromStr + Copy + TryFrom<u32>>(value: &str) -> Option<(T, T)>
where
    u32: From<T>,
{
    let (first, second) = match value.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let first: T = value.trim().parse().ok()?;
            (first, T::try_from(u32::from(first) + 1).ok()?)
        }
    };
    Some((first, second))
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.lower {
            Lower::Udp => "RTP/AVP",
            Lower::Tcp => "RTP/AVP/TCP",
        })?;
        f.write_str(if self.unicast {
            ";unicast"
        } else {
            ";multicast"
        })?;
        if let Some((rtp, rtcp)) = self.interleaved {
            write!(f, ";interleaved={rtp}-{rtcp}")?;
        }
        if let Some((rtp, rtcp)) = self.client_port {
            write!(f, ";client_port={rtp}-{rtcp}")?;
        }
        if let Some((rtp, rtcp)) = self.server_port {
            write!(f, ";server_port={rtp}-{rtcp}")?;
        }
        if let Some(ssrc) = self.ssrc {
            write!(f, ";ssrc={ssrc:08X}")?;
        }
        if self.record {
            f.write_str(";mode=record")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_clients_ask_for() {
        let ffmpeg_publish =
            Transport::parse("RTP/AVP/TCP;unicast;interleaved=0-1;mode=record").unwrap();
        assert_eq!(
            ffmpeg_publish,
            Transport {
                lower: Lower::Tcp,
                unicast: true,
                interleaved: Some((0, 1)),
                client_port: None,
                server_port: None,
                ssrc: None,
                record: true,
            }
        );
        let udp = Transport::parse("RTP/AVP;unicast;client_port=5000-5001").unwrap();
        assert_eq!(
            (udp.lower, udp.client_port),
            (Lower::Udp, Some((5000, 5001)))
        );
        let gstreamer =
            Transport::parse("RTP/AVP/UDP;unicast;client_port=6000;mode=\"RECORD\"").unwrap();
        assert_eq!(
            (gstreamer.client_port, gstreamer.record),
            (Some((6000, 6001)), true)
        );
        let answer =
            Transport::parse("RTP/AVP;unicast;server_port=7000-7001;ssrc=0000ABCD").unwrap();
        assert_eq!(
            (answer.server_port, answer.ssrc),
            (Some((7000, 7001)), Some(0xABCD))
        );
        assert_eq!(Transport::parse("RTP/SAVP;unicast"), None);
        assert_eq!(Transport::parse("RTP/AVP/TCP;interleaved=255"), None);
        assert_eq!(Transport::parse("RTP/AVP;client_port=x-1"), None);
    }

    #[test]
    fn chooses_the_first_servable_alternative() {
        let header = "RTP/AVP;multicast,RTP/SAVP;unicast;client_port=1-2,RTP/AVP/TCP;unicast;interleaved=2-3";
        assert_eq!(Transport::choose(header).unwrap().interleaved, Some((2, 3)));
        assert_eq!(
            Transport::choose("RTP/AVP;unicast"),
            None,
            "UDP needs client ports"
        );
    }

    #[test]
    fn written_transport_reads_back() {
        let transport = Transport {
            lower: Lower::Udp,
            unicast: true,
            interleaved: None,
            client_port: Some((5000, 5001)),
            server_port: Some((6970, 6971)),
            ssrc: Some(0x1234ABCD),
            record: false,
        };
        let text = transport.to_string();
        assert_eq!(
            text,
            "RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;ssrc=1234ABCD"
        );
        assert_eq!(Transport::parse(&text), Some(transport));
    }
}
