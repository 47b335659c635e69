//! What both transports read off a request besides its tensors, with one rule and one wording:
//! the sticky route key and the client's timeout, turned into core values.

use std::time::{Duration, Instant};

/// The most inputs, outputs and parameters one request may carry, on either transport: more
/// than any model has, and small enough that a request of empty entries cannot amplify into
/// gigabytes of per-entry structures. Refused with 400 / INVALID_ARGUMENT naming the limit.
pub const MAX_INPUTS: usize = 1024;
pub const MAX_OUTPUTS: usize = 1024;
pub const MAX_PARAMETERS: usize = 64;
/// Dimensions of one tensor's shape at most (a hostile shape of millions of zeros would
/// otherwise widen 8x and echo whole in its error).
pub const MAX_RANK: usize = 64;

/// The refusal of a shape of more than [`MAX_RANK`] dimensions.
pub fn rank_too_large() -> String {
    format!("shape has more than {MAX_RANK} dimensions")
}

/// The refusal of a request that carries more than `limit` of `what`.
pub fn too_many(what: &str, limit: usize) -> String {
    format!("too many {what} in one request: the limit is {limit}")
}

/// Sticky routing key (HTTP header, gRPC metadata): requests with the same key land on the same
/// version.
pub const ROUTE_KEY: &str = "x-route-key";

/// The route key as sent (`None`: not sent). Like an HTTP header's text, it must be visible
/// ASCII (or tab); anything else is refused rather than guessed at.
pub fn route_key(value: Option<&[u8]>) -> Result<Option<String>, String> {
    let Some(bytes) = value else {
        return Ok(None);
    };
    let visible = |b: u8| (32..127).contains(&b) || b == b'\t';
    match std::str::from_utf8(bytes) {
        Ok(key) if bytes.iter().all(|&b| visible(b)) => Ok(Some(key.to_owned())),
        _ => Err(format!("{ROUTE_KEY} must be visible ASCII")),
    }
}

/// A client's timeout in microseconds (tritonclient's `timeout` parameter, on either
/// transport); 0 means none.
pub fn timeout_from_micros(us: u64) -> Option<Duration> {
    (us > 0).then(|| Duration::from_micros(us))
}

/// When a request started at `start` must be answered by: the client's timeout, else the
/// version's `default_timeout_us`. A deadline beyond what `Instant` can hold could never pass,
/// so it is none.
pub fn deadline(
    start: Instant,
    client: Option<Duration>,
    default: Option<Duration>,
) -> Option<Instant> {
    client.or(default).and_then(|t| start.checked_add(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_keys_are_visible_ascii_or_refused() {
        assert_eq!(route_key(None), Ok(None));
        assert_eq!(route_key(Some(b"user 42\t")), Ok(Some("user 42\t".into())));
        for bad in [&b"caf\xc3\xa9"[..], b"a\x7f", b"\x01"] {
            assert_eq!(
                route_key(Some(bad)),
                Err("x-route-key must be visible ASCII".into())
            );
        }
    }

    #[test]
    fn the_client_timeout_wins_over_the_default_and_zero_is_none() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(timeout_from_micros(0), None);
        assert_eq!(timeout_from_micros(1500), Some(Duration::from_micros(1500)));
        assert_eq!(
            deadline(start, Some(ms(5)), Some(ms(9))),
            Some(start + ms(5))
        );
        assert_eq!(deadline(start, None, Some(ms(9))), Some(start + ms(9)));
        assert_eq!(deadline(start, None, None), None);
    }

    #[test]
    fn a_deadline_past_the_end_of_time_is_none_not_a_panic() {
        let forever = Duration::from_secs(u64::MAX);
        assert_eq!(deadline(Instant::now(), Some(forever), None), None);
    }
}
