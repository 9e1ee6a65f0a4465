//! Signed play tokens: what `?token=` on a play URL must be when a node runs with a play
//! secret. A token names a stream, an expiry and optionally the one client address it is
//! good for, signed with HMAC-SHA256 under the secret every node and the control API share,
//! so that any node checks it on its own, with no registry round trip.
//!
//! The text is `{expires}.{signature}`, or `{expires}.ip.{signature}` for a token bound to
//! the client's address: `expires` in Unix seconds, the signature base64url (no padding)
//! over `ferrolive-play`, the stream (`app/room`), the expiry and the address (empty when
//! unbound), one per line.

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Why a play is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("this stream needs a play token (?token=)")]
    Missing,
    #[error("the play token is not one")]
    Malformed,
    #[error("the play token has expired")]
    Expired,
    /// Tampered with, for another stream, for another client address, or signed with
    /// another secret: which one is not said.
    #[error("the play token is not valid for this stream and client")]
    Invalid,
}

/// An HMAC-SHA256 key, keyed once (not per message). It never shows in logs or debug
/// output.
#[derive(Clone)]
pub struct HmacKey(Hmac<Sha256>);

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(..)")
    }
}

impl HmacKey {
    pub fn new(secret: &[u8]) -> HmacKey {
        // HMAC's own key rule (RFC 2104): a key longer than the hash's block is hashed
        // first, and the key is padded with zeros to a block.
        let mut block = [0u8; 64];
        if secret.len() > block.len() {
            block[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            block[..secret.len()].copy_from_slice(secret);
        }
        HmacKey(<Hmac<Sha256> as KeyInit>::new(&block.into()))
    }

    /// The HMAC of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the HMAC of `message` (compared in constant time).
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.0.clone();
        mac.update(message);
        mac.verify_slice(tag).is_ok()
    }
}

/// The secret play tokens are signed with, shared by every node and the control API.
#[derive(Clone, Debug)]
pub struct PlaySecret(HmacKey);

impl PlaySecret {
    pub fn new(secret: &[u8]) -> PlaySecret {
        PlaySecret(HmacKey::new(secret))
    }

    /// What a token's signature is the HMAC of.
    fn signed(stream: &str, expires: u64, ip: Option<IpAddr>) -> String {
        let ip = ip.map(|ip| ip.to_string()).unwrap_or_default();
        format!("ferrolive-play\n{stream}\n{expires}\n{ip}")
    }

    /// A token for playing `stream` until `expires` (Unix seconds), from `ip` only if given.
    pub fn sign(&self, stream: &str, expires: u64, ip: Option<IpAddr>) -> String {
        let signature = self.0.sign(Self::signed(stream, expires, ip).as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(signature);
        match ip {
            Some(_) => format!("{expires}.ip.{tag}"),
            None => format!("{expires}.{tag}"),
        }
    }

    /// Whether `token` lets `client` play `stream` at `now` (Unix seconds).
    pub fn verify(
        &self,
        stream: &str,
        token: Option<&str>,
        now: u64,
        client: IpAddr,
    ) -> Result<(), TokenError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(TokenError::Missing)?;
        let mut fields = token.split('.');
        let expires: u64 = fields
            .next()
            .and_then(|e| e.parse().ok())
            .ok_or(TokenError::Malformed)?;
        let (bound, tag) = match (fields.next(), fields.next(), fields.next()) {
            (Some("ip"), Some(tag), None) => (true, tag),
            (Some(tag), None, None) => (false, tag),
            _ => return Err(TokenError::Malformed),
        };
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        // Checked in constant time, and before the expiry, so that an expired token says
        // so only when it was a real one.
        let signed = Self::signed(stream, expires, bound.then_some(client));
        if !self.0.verify(signed.as_bytes(), &tag) {
            return Err(TokenError::Invalid);
        }
        if now >= expires {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

/// The `token` parameter of a URL query (`a=1&token=X`).
pub fn from_query(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> PlaySecret {
        PlaySecret::new(b"shared by every node")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_token_plays_its_stream_until_it_expires() {
        let token = secret().sign("live/a", 1_000, None);
        let check = |stream: &str, token: &str, now: u64| {
            secret().verify(stream, Some(token), now, ip("10.0.0.1"))
        };
        assert_eq!(check("live/a", &token, 999), Ok(()));
        assert_eq!(check("live/a", &token, 1_000), Err(TokenError::Expired));
        assert_eq!(check("live/b", &token, 999), Err(TokenError::Invalid));
        assert_eq!(check("other/a", &token, 999), Err(TokenError::Invalid));
        // Tampered: a later expiry, a changed signature.
        let later = token.replacen("1000", "9000", 1);
        assert_eq!(check("live/a", &later, 999), Err(TokenError::Invalid));
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(check("live/a", &flipped, 999), Err(TokenError::Invalid));
        let other_secret = PlaySecret::new(b"another secret").sign("live/a", 1_000, None);
        assert_eq!(
            check("live/a", &other_secret, 999),
            Err(TokenError::Invalid)
        );
        for bad in ["x", "1000", "1000.ip", "1000.a.b.c", "abc.def", "1000.!!!"] {
            assert_eq!(check("live/a", bad, 0), Err(TokenError::Malformed), "{bad}");
        }
        assert_eq!(
            secret().verify("live/a", None, 0, ip("10.0.0.1")),
            Err(TokenError::Missing)
        );
    }

    #[test]
    fn a_bound_token_plays_from_its_address_only() {
        let token = secret().sign("live/a", 1_000, Some(ip("192.0.2.7")));
        assert!(token.contains(".ip."));
        let from = |client: &str| secret().verify("live/a", Some(&token), 10, ip(client));
        assert_eq!(from("192.0.2.7"), Ok(()));
        assert_eq!(from("192.0.2.8"), Err(TokenError::Invalid));
        assert_eq!(from("::1"), Err(TokenError::Invalid));
    }

    /// The key made once is HMAC's own: short, block-long and longer secrets sign as
    /// HMAC-SHA256 keyed with them does.
    #[test]
    fn the_secret_keys_hmac_as_hmac_does() {
        for len in [0, 1, 20, 64, 65, 200] {
            let key = vec![0xA5u8; len];
            let mut expected =
                <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("any key length");
            expected.update(b"ferrolive-play\nlive/a\n9\n");
            let tag = URL_SAFE_NO_PAD.encode(expected.finalize().into_bytes());
            assert_eq!(
                PlaySecret::new(&key).sign("live/a", 9, None),
                format!("9.{tag}")
            );
        }
    }

    #[test]
    fn the_secret_does_not_show() {
        let secret = PlaySecret::new(b"hunter2");
        assert_eq!(format!("{secret:?}"), "PlaySecret(HmacKey(..))");
        let token = secret.sign("live/a", 10, None);
        assert_eq!(secret.verify("live/a", Some(&token), 5, ip("::1")), Ok(()));
    }

    #[test]
    fn the_token_is_found_in_a_query() {
        assert_eq!(from_query("token=abc"), Some("abc"));
        assert_eq!(from_query("_HLS_msn=3&token=1.x&_HLS_part=1"), Some("1.x"));
        assert_eq!(from_query("mytoken=abc"), None);
        assert_eq!(from_query(""), None);
    }
}
