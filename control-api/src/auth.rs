//! Access control: a static admin token and/or HS256 JWTs (livego's `jwt` option).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Which credentials the API accepts. With neither configured, everything is allowed (and
/// the API listens on loopback only).
#[derive(Clone)]
pub struct Auth {
    /// SHA-256 of the admin token: compared in constant time without leaking its length.
    admin_token: Option<[u8; 32]>,
    jwt_secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("invalid token")]
    Invalid,
    #[error("token expired")]
    Expired,
}

impl Auth {
    pub fn new(admin_token: Option<String>, jwt_secret: Option<String>) -> Self {
        Auth {
            admin_token: admin_token
                .filter(|t| !t.is_empty())
                .map(|t| sha256(t.as_bytes())),
            jwt_secret: jwt_secret.filter(|s| !s.is_empty()).map(String::into_bytes),
        }
    }

    /// Whether any credential is required.
    pub fn enabled(&self) -> bool {
        self.admin_token.is_some() || self.jwt_secret.is_some()
    }

    /// For the start-up log line.
    pub fn describe(&self) -> &'static str {
        match (self.admin_token.is_some(), self.jwt_secret.is_some()) {
            (true, true) => "admin token or HS256 JWT",
            (true, false) => "admin token",
            (false, true) => "HS256 JWT",
            (false, false) => "none (loopback only)",
        }
    }

    /// Check a request's credentials: the `Authorization` header value and livego's `jwt`
    /// query parameter.
    pub fn check(
        &self,
        authorization: Option<&str>,
        jwt_query: Option<&str>,
    ) -> Result<(), AuthError> {
        if !self.enabled() {
            return Ok(());
        }
        let bearer = authorization.map(|value| {
            let value = value.trim();
            match value.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
                _ => "",
            }
        });
        if bearer.is_none() && jwt_query.is_none() {
            return Err(AuthError::Missing);
        }
        let mut error = AuthError::Invalid;
        if let Some(token) = bearer.filter(|t| !t.is_empty()) {
            if let Some(expected) = &self.admin_token {
                if constant_time_eq(&sha256(token.as_bytes()), expected) {
                    return Ok(());
                }
            }
            if let Some(secret) = &self.jwt_secret {
                match verify_hs256(token, secret, now_s()) {
                    Ok(()) => return Ok(()),
                    Err(e) => error = e,
                }
            }
        }
        if let (Some(token), Some(secret)) = (jwt_query, &self.jwt_secret) {
            match verify_hs256(token, secret, now_s()) {
                Ok(()) => return Ok(()),
                Err(e) => error = e,
            }
        }
        Err(error)
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the comparison from being short-circuited by the optimizer.
    std::hint::black_box(diff) == 0
}

fn now_s() -> u64 {
    registry::now_ms() / 1000
}

/// Verify a compact JWS signed with HS256: header `alg` must be `HS256`, the signature must
/// match (checked in constant time), and `exp`/`nbf`, when present, must hold at `now`.
pub(crate) fn verify_hs256(token: &str, secret: &[u8], now: u64) -> Result<(), AuthError> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Invalid);
    };
    // Tolerate padded base64url, which some libraries emit.
    let decode = |part: &str| {
        b64.decode(part.trim_end_matches('='))
            .map_err(|_| AuthError::Invalid)
    };
    let header: serde_json::Value =
        serde_json::from_slice(&decode(header)?).map_err(|_| AuthError::Invalid)?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(AuthError::Invalid);
    }
    let signature = decode(signature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| AuthError::Invalid)?;
    let signed_len = token.rfind('.').ok_or(AuthError::Invalid)?;
    mac.update(&token.as_bytes()[..signed_len]);
    mac.verify_slice(&signature)
        .map_err(|_| AuthError::Invalid)?;

    let claims: serde_json::Value =
        serde_json::from_slice(&decode(payload)?).map_err(|_| AuthError::Invalid)?;
    if !claims.is_object() {
        return Err(AuthError::Invalid);
    }
    let time_claim = |name: &str| -> Result<Option<u64>, AuthError> {
        match claims.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|t| t.is_finite())
                .map(|t| Some(t.max(0.0) as u64))
                .ok_or(AuthError::Invalid),
        }
    };
    if let Some(exp) = time_claim("exp")? {
        if now >= exp {
            return Err(AuthError::Expired);
        }
    }
    if let Some(nbf) = time_claim("nbf")? {
        if now < nbf {
            return Err(AuthError::Invalid);
        }
    }
    Ok(())
}

/// Sign claims as an HS256 JWT (tests and tooling).
#[cfg(test)]
pub(crate) fn sign_hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!(
        "{}.{}",
        b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        b64.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jwt_round_trip_and_rejections() {
        let secret = b"s3cret";
        let token = sign_hs256(&json!({"sub": "ops", "exp": 2_000}), secret);
        assert_eq!(verify_hs256(&token, secret, 1_000), Ok(()));
        assert_eq!(verify_hs256(&token, secret, 2_000), Err(AuthError::Expired));
        assert_eq!(
            verify_hs256(&token, b"other", 1_000),
            Err(AuthError::Invalid)
        );
        // Tampered payload.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"exp":9999999999}"#);
        parts[1] = &forged;
        assert_eq!(
            verify_hs256(&parts.join("."), secret, 1_000),
            Err(AuthError::Invalid)
        );
        // alg=none is refused.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!("{}.{}.", b64.encode(r#"{"alg":"none"}"#), b64.encode("{}"));
        assert_eq!(verify_hs256(&none, secret, 1_000), Err(AuthError::Invalid));
        assert_eq!(
            verify_hs256("garbage", secret, 1_000),
            Err(AuthError::Invalid)
        );
        // nbf in the future.
        let early = sign_hs256(&json!({"nbf": 5_000}), secret);
        assert_eq!(verify_hs256(&early, secret, 1_000), Err(AuthError::Invalid));
        assert_eq!(verify_hs256(&early, secret, 5_000), Ok(()));
    }

    #[test]
    fn check_tokens() {
        let open = Auth::new(None, None);
        assert_eq!(open.check(None, None), Ok(()));

        let auth = Auth::new(Some("tok".into()), Some("sec".into()));
        assert_eq!(auth.check(None, None), Err(AuthError::Missing));
        assert_eq!(auth.check(Some("Bearer tok"), None), Ok(()));
        assert_eq!(auth.check(Some("bearer tok"), None), Ok(()));
        assert_eq!(
            auth.check(Some("Bearer tok2"), None),
            Err(AuthError::Invalid)
        );
        assert_eq!(auth.check(Some("Basic tok"), None), Err(AuthError::Invalid));
        let jwt = sign_hs256(&json!({"exp": now_s() + 60}), b"sec");
        assert_eq!(auth.check(Some(&format!("Bearer {jwt}")), None), Ok(()));
        assert_eq!(auth.check(None, Some(&jwt)), Ok(()));
        // The admin token is not a JWT.
        assert_eq!(auth.check(None, Some("tok")), Err(AuthError::Invalid));

        let token_only = Auth::new(Some("tok".into()), None);
        assert_eq!(token_only.check(None, Some(&jwt)), Err(AuthError::Invalid));
    }
}
