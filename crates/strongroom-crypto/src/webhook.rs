//! Webhook signatures: what a notifier's receiver checks to know a delivery
//! came from this server, unaltered and recently.
//!
//! A delivery carries `Strongroom-Timestamp: <unix seconds>` and
//! `Strongroom-Signature: v1=<hex>`, the hex HMAC-SHA256 under the
//! tenant's signing secret of `timestamp + "." + body` (the body's exact
//! bytes). A receiver recomputes it, compares in constant time, and refuses
//! a timestamp further than [`REPLAY_WINDOW_SECS`] from its own clock, so a
//! captured delivery cannot be replayed later.

use ring::hmac;

/// The signature scheme's version, the prefix of the signature header's
/// value.
pub const SIGNATURE_VERSION: &str = "v1";

/// How far (either way) a receiver should accept a delivery's timestamp
/// from its own clock: 5 minutes.
pub const REPLAY_WINDOW_SECS: i64 = 300;

/// The signature header's value for `body` sent at `timestamp` (unix
/// seconds) under `secret`: `v1=<hex HMAC-SHA256(secret, timestamp "." body)>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("{SIGNATURE_VERSION}={}", hex::encode(ctx.sign().as_ref()))
}

/// Why a delivery's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureRefusal {
    /// The timestamp is not a whole number of seconds.
    BadTimestamp,
    /// The timestamp lies outside the replay window.
    Stale,
    /// The signature is not `v1=<hex>` of the body under the secret.
    Mismatch,
}

/// What a receiver does: checks `signature` (the header's value) over
/// `body` sent at `timestamp` (the header's value) under `secret`, and that
/// the timestamp is within [`REPLAY_WINDOW_SECS`] of `now` (unix seconds).
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: i64,
) -> Result<(), SignatureRefusal> {
    let at: i64 = timestamp
        .parse()
        .map_err(|_| SignatureRefusal::BadTimestamp)?;
    if (now - at).abs() > REPLAY_WINDOW_SECS {
        return Err(SignatureRefusal::Stale);
    }
    let expected = sign(secret, at, body);
    if crate::constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        Ok(())
    } else {
        Err(SignatureRefusal::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec-test-secret";
    const BODY: &[u8] = br#"{"event":"test"}"#;
    const AT: i64 = 1_796_601_600;

    #[test]
    fn signs_timestamp_dot_body() {
        // Python: hmac.new(secret, b'1796601600.' + body, sha256).hexdigest()
        assert_eq!(
            sign(SECRET, AT, BODY),
            "v1=b78b381348834c0e90bd8def057468649d46e059e53b52b38073fc245cf1d600"
        );
    }

    #[test]
    fn verifies_and_refuses() {
        let sig = sign(SECRET, AT, BODY);
        assert_eq!(verify(SECRET, "1796601600", BODY, &sig, AT + 10), Ok(()));
        assert_eq!(
            verify(SECRET, "1796601600", br#"{"event":"tset"}"#, &sig, AT),
            Err(SignatureRefusal::Mismatch)
        );
        assert_eq!(
            verify(b"another", "1796601600", BODY, &sig, AT),
            Err(SignatureRefusal::Mismatch)
        );
        assert_eq!(
            verify(SECRET, "1796601601", BODY, &sig, AT),
            Err(SignatureRefusal::Mismatch),
            "the timestamp is signed"
        );
        assert_eq!(
            verify(
                SECRET,
                "1796601600",
                BODY,
                &sig,
                AT + REPLAY_WINDOW_SECS + 1
            ),
            Err(SignatureRefusal::Stale)
        );
        assert_eq!(
            verify(SECRET, "soon", BODY, &sig, AT),
            Err(SignatureRefusal::BadTimestamp)
        );
    }
}
