//! gzip and deflate for both transports: the request's encoding from its header, a streaming
//! decoder that stops at a bound (a compression bomb costs at most the bound, never its inflated
//! size), the response encoding a client accepts, and compressing an answer.

use std::io::{self, Write};

use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};

/// A body encoding other than identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    /// HTTP's and gRPC's `deflate` is the zlib format; a raw deflate stream is accepted too, as
    /// some clients send that.
    Deflate,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
        }
    }

    /// The encoding a `Content-Encoding` value names: `None` for identity (or no header),
    /// `Err` with the value for one we do not decode.
    pub fn of_request(value: Option<&[u8]>) -> Result<Option<Encoding>, String> {
        let Some(value) = value else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(value);
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(None),
            "gzip" | "x-gzip" => Ok(Some(Encoding::Gzip)),
            "deflate" => Ok(Some(Encoding::Deflate)),
            _ => Err(format!(
                "unsupported Content-Encoding {:?}: this server decodes gzip, deflate and identity",
                crate::error::clip(&text)
            )),
        }
    }

    /// The encoding to answer in for an `Accept-Encoding` value: gzip before deflate, an entry
    /// with `q=0` refused, `*` taken as gzip.
    pub fn accepted(value: Option<&[u8]>) -> Option<Encoding> {
        let text = std::str::from_utf8(value?).ok()?;
        let mut best = None;
        for item in text.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            let enc = match name.as_str() {
                "gzip" | "x-gzip" | "*" => Encoding::Gzip,
                "deflate" => Encoding::Deflate,
                _ => continue,
            };
            if !refused && (best.is_none() || enc == Encoding::Gzip) {
                best = Some(enc);
            }
        }
        best
    }

    /// `bytes` compressed in this encoding (fast level: answers are latency-bound).
    pub fn compress(self, bytes: &[u8]) -> Vec<u8> {
        let level = flate2::Compression::fast();
        let out = Vec::with_capacity(bytes.len() / 4 + 64);
        // Writing into a Vec cannot fail.
        let done = match self {
            Encoding::Gzip => {
                let mut e = flate2::write::GzEncoder::new(out, level);
                e.write_all(bytes).and_then(|()| e.finish())
            }
            Encoding::Deflate => {
                let mut e = flate2::write::ZlibEncoder::new(out, level);
                e.write_all(bytes).and_then(|()| e.finish())
            }
        };
        done.unwrap_or_default()
    }
}

/// Why a body did not decode.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// The decoded bytes would pass the bound.
    TooLarge,
    /// Not a valid stream of its encoding (the decoder's words).
    Malformed(String),
}

/// The decoded bytes, refusing to grow past `limit`.
struct Bounded {
    out: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len().saturating_add(buf.len()) > self.limit {
            self.over = true;
            return Err(io::Error::other("decoded body over its bound"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Decoder {
    /// A deflate body before its first two bytes tell zlib from raw deflate.
    Undecided(Vec<u8>, Bounded),
    Gzip(GzDecoder<Bounded>),
    Zlib(ZlibDecoder<Bounded>),
    Raw(DeflateDecoder<Bounded>),
}

/// A streaming decoder: compressed chunks in as they arrive, the decoded bytes kept up to the
/// bound. Memory is the bound plus the decoder's window, whatever the compressed input says.
pub struct Inflater(Option<Decoder>);

impl Inflater {
    pub fn new(encoding: Encoding, limit: usize, capacity: usize) -> Inflater {
        let out = Bounded {
            out: Vec::with_capacity(capacity.min(limit)),
            limit,
            over: false,
        };
        Inflater(Some(match encoding {
            Encoding::Gzip => Decoder::Gzip(GzDecoder::new(out)),
            Encoding::Deflate => Decoder::Undecided(Vec::new(), out),
        }))
    }

    /// The bytes decoded so far.
    pub fn decoded_len(&self) -> usize {
        match &self.0 {
            Some(Decoder::Undecided(_, b)) => b.out.len(),
            Some(Decoder::Gzip(d)) => d.get_ref().out.len(),
            Some(Decoder::Zlib(d)) => d.get_ref().out.len(),
            Some(Decoder::Raw(d)) => d.get_ref().out.len(),
            None => 0,
        }
    }

    /// Decodes the next compressed chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), InflateError> {
        let decoder = self.0.take().ok_or(InflateError::TooLarge)?;
        let (decoder, result) = match decoder {
            Decoder::Undecided(mut head, out) => {
                head.extend_from_slice(chunk);
                if head.len() < 2 {
                    self.0 = Some(Decoder::Undecided(head, out));
                    return Ok(());
                }
                // RFC 1950: method 8 in the low nibble, and the two bytes a multiple of 31.
                let zlib = head[0] & 0x0f == 8 && u16::from_be_bytes([head[0], head[1]]) % 31 == 0;
                let mut d = if zlib {
                    Decoder::Zlib(ZlibDecoder::new(out))
                } else {
                    Decoder::Raw(DeflateDecoder::new(out))
                };
                let r = write(&mut d, &head);
                (d, r)
            }
            mut d => {
                let r = write(&mut d, chunk);
                (d, r)
            }
        };
        self.0 = Some(decoder);
        result.map_err(|e| self.error(e))
    }

    /// The whole decoded body, once the stream has ended where its format says it ends.
    pub fn finish(mut self) -> Result<Vec<u8>, InflateError> {
        let decoder = self.0.take().ok_or(InflateError::TooLarge)?;
        let done = match decoder {
            Decoder::Undecided(head, _) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("a deflate body of {} byte(s) is truncated", head.len()),
            )),
            Decoder::Gzip(d) => d.finish(),
            Decoder::Zlib(d) => d.finish(),
            Decoder::Raw(d) => d.finish(),
        };
        match done {
            Ok(b) if b.over => Err(InflateError::TooLarge),
            Ok(b) => Ok(b.out),
            Err(e) if e.to_string().contains("over its bound") => Err(InflateError::TooLarge),
            Err(e) => Err(InflateError::Malformed(e.to_string())),
        }
    }

    fn error(&self, e: io::Error) -> InflateError {
        let over = match &self.0 {
            Some(Decoder::Gzip(d)) => d.get_ref().over,
            Some(Decoder::Zlib(d)) => d.get_ref().over,
            Some(Decoder::Raw(d)) => d.get_ref().over,
            _ => false,
        };
        if over {
            InflateError::TooLarge
        } else {
            InflateError::Malformed(e.to_string())
        }
    }
}

fn write(d: &mut Decoder, chunk: &[u8]) -> io::Result<()> {
    match d {
        Decoder::Gzip(d) => d.write_all(chunk),
        Decoder::Zlib(d) => d.write_all(chunk),
        Decoder::Raw(d) => d.write_all(chunk),
        Decoder::Undecided(..) => Ok(()),
    }
}

/// A whole compressed message decoded within `limit` (gRPC messages arrive whole).
pub fn inflate(encoding: Encoding, bytes: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    let mut i = Inflater::new(encoding, limit, bytes.len().saturating_mul(4));
    for chunk in bytes.chunks(64 * 1024) {
        i.push(chunk)?;
    }
    i.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_encodings_round_trip_in_small_chunks() {
        let body: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for enc in [Encoding::Gzip, Encoding::Deflate] {
            let packed = enc.compress(&body);
            let mut i = Inflater::new(enc, body.len(), 0);
            for c in packed.chunks(1) {
                i.push(c).unwrap();
            }
            assert_eq!(i.finish().unwrap(), body, "{enc:?}");
        }
    }

    #[test]
    fn raw_deflate_is_accepted_as_deflate() {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b"hello hello hello").unwrap();
        let packed = e.finish().unwrap();
        assert_eq!(
            inflate(Encoding::Deflate, &packed, 100).unwrap(),
            b"hello hello hello"
        );
    }

    #[test]
    fn decoding_stops_at_the_bound() {
        let packed = Encoding::Gzip.compress(&vec![0u8; 10 << 20]);
        assert_eq!(
            inflate(Encoding::Gzip, &packed, 1 << 20),
            Err(InflateError::TooLarge)
        );
        assert_eq!(
            inflate(Encoding::Gzip, &packed, 10 << 20).unwrap().len(),
            10 << 20
        );
    }

    #[test]
    fn truncated_and_garbage_streams_are_malformed() {
        let packed = Encoding::Gzip.compress(b"some body of bytes");
        for bad in [
            &packed[..packed.len() - 3],
            b"not gzip at all".as_slice(),
            b"x",
        ] {
            for enc in [Encoding::Gzip, Encoding::Deflate] {
                assert!(
                    matches!(inflate(enc, bad, 100), Err(InflateError::Malformed(_))),
                    "{enc:?} {bad:?}"
                );
            }
        }
    }

    #[test]
    fn accept_encoding_prefers_gzip_and_honours_q_zero() {
        let a = |v: &str| Encoding::accepted(Some(v.as_bytes()));
        assert_eq!(a("gzip"), Some(Encoding::Gzip));
        assert_eq!(a("deflate"), Some(Encoding::Deflate));
        assert_eq!(a("deflate, gzip;q=0.5"), Some(Encoding::Gzip));
        assert_eq!(a("gzip;q=0, deflate"), Some(Encoding::Deflate));
        assert_eq!(a("br, identity"), None);
        assert_eq!(Encoding::accepted(None), None);
    }

    #[test]
    fn content_encoding_names() {
        let e = |v: &str| Encoding::of_request(Some(v.as_bytes()));
        assert_eq!(e("GZIP"), Ok(Some(Encoding::Gzip)));
        assert_eq!(e("deflate"), Ok(Some(Encoding::Deflate)));
        assert_eq!(e("identity"), Ok(None));
        assert!(e("br")
            .unwrap_err()
            .contains("unsupported Content-Encoding \"br\""));
    }
}
