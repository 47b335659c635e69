//! A walk over an encoded `ModelInferRequest` before prost decodes it: counts its repeated
//! entries and estimates what decoding builds beside the message's own bytes. An empty entry is
//! two bytes on the wire but a whole struct once decoded (an `InferInputTensor` is hundreds of
//! bytes), so a request of empty entries would amplify 16-156x; this refuses it first.

use std::mem::size_of;

use bytes::Bytes;

use crate::proto::inference as pb;
use crate::routing::request::{
    rank_too_large, too_many, MAX_INPUTS, MAX_OUTPUTS, MAX_PARAMETERS, MAX_RANK,
};

/// What the walk learnt.
#[derive(Debug, Default, PartialEq)]
pub struct Scan {
    pub model: String,
    /// Bytes decoding allocates beyond the message: structs per entry, widened varints.
    pub overhead: usize,
}

/// Why the walk refused the message.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// More entries than a request may carry (INVALID_ARGUMENT).
    TooMany(String),
    /// Not a well-formed message: prost will say more; let it.
    Malformed,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// The next field: (number, wire type, length-delimited payload or empty).
    fn field(&mut self) -> Option<(u64, u8, &'a [u8])> {
        let key = self.varint()?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        let payload = match wire {
            0 => {
                self.varint()?;
                &[][..]
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                let (_, rest) = self.buf.split_at_checked(n)?;
                self.buf = rest;
                &[][..]
            }
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                let (p, rest) = self.buf.split_at_checked(len)?;
                self.buf = rest;
                p
            }
            _ => return None,
        };
        Some((number, wire, payload))
    }

    fn done(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Cost of one `map<string, InferParameter>` entry once decoded (hash map slot and key).
const PARAMETER_COST: usize = size_of::<(String, pb::InferParameter)>() + 16;

fn count(what: &str, n: &mut usize, limit: usize) -> Result<(), Refusal> {
    *n += 1;
    if *n > limit {
        return Err(Refusal::TooMany(too_many(what, limit)));
    }
    Ok(())
}

/// Elements in a packed varint payload (one per byte with the high bit clear).
fn varints(p: &[u8]) -> usize {
    p.iter().filter(|&&b| b & 0x80 == 0).count()
}

fn contents(p: &[u8], overhead: &mut usize) -> Result<(), Refusal> {
    let mut r = Reader { buf: p };
    while !r.done() {
        let (number, wire, payload) = r.field().ok_or(Refusal::Malformed)?;
        // Width once decoded per element; packed varints widen (1 byte → 4 or 8).
        let width = match number {
            1 => 1,
            2 | 4 => 4,
            3 | 5 => 8,
            6 | 7 => 0,
            8 => {
                *overhead += size_of::<Bytes>();
                continue;
            }
            _ => 0,
        };
        *overhead += match wire {
            2 => varints(payload) * width,
            _ => width,
        };
    }
    Ok(())
}

fn input(p: &[u8], overhead: &mut usize) -> Result<(), Refusal> {
    let mut r = Reader { buf: p };
    let (mut params, mut rank) = (0, 0);
    while !r.done() {
        let field = r.field().ok_or(Refusal::Malformed)?;
        if field.0 == 3 {
            rank += if field.1 == 2 { varints(field.2) } else { 1 };
            if rank > MAX_RANK {
                return Err(Refusal::TooMany(rank_too_large()));
            }
        }
        match field {
            (3, 2, dims) => *overhead += varints(dims) * 8,
            (3, _, _) => *overhead += 8,
            (4, ..) => {
                count("parameters of one input", &mut params, MAX_PARAMETERS)?;
                *overhead += PARAMETER_COST;
            }
            (5, 2, c) => contents(c, overhead)?,
            _ => {}
        }
    }
    Ok(())
}

fn output(p: &[u8], overhead: &mut usize) -> Result<(), Refusal> {
    let mut r = Reader { buf: p };
    let mut params = 0;
    while !r.done() {
        if let (2, ..) = r.field().ok_or(Refusal::Malformed)? {
            count("parameters of one output", &mut params, MAX_PARAMETERS)?;
            *overhead += PARAMETER_COST;
        }
    }
    Ok(())
}

/// Walks an encoded `ModelInferRequest`.
pub fn scan(msg: &[u8]) -> Result<Scan, Refusal> {
    let mut r = Reader { buf: msg };
    let mut scan = Scan::default();
    let (mut inputs, mut outputs, mut raw, mut params) = (0, 0, 0, 0);
    while !r.done() {
        let (number, _, payload) = r.field().ok_or(Refusal::Malformed)?;
        let overhead = &mut scan.overhead;
        match number {
            1 => scan.model = String::from_utf8_lossy(payload).into_owned(),
            4 => {
                count("parameters", &mut params, MAX_PARAMETERS)?;
                *overhead += PARAMETER_COST;
            }
            5 => {
                count("inputs", &mut inputs, MAX_INPUTS)?;
                *overhead += size_of::<pb::model_infer_request::InferInputTensor>();
                input(payload, overhead)?;
            }
            6 => {
                count("outputs", &mut outputs, MAX_OUTPUTS)?;
                *overhead += size_of::<pb::model_infer_request::InferRequestedOutputTensor>();
                output(payload, overhead)?;
            }
            7 => {
                count("raw_input_contents", &mut raw, MAX_INPUTS)?;
                *overhead += size_of::<Bytes>();
            }
            _ => {}
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn request(inputs: usize, outputs: usize) -> Vec<u8> {
        pb::ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![Default::default(); inputs],
            outputs: vec![Default::default(); outputs],
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn counts_past_the_limits_are_refused_naming_them() {
        assert_eq!(
            scan(&request(1025, 0)),
            Err(Refusal::TooMany(too_many("inputs", 1024)))
        );
        assert_eq!(
            scan(&request(0, 1025)),
            Err(Refusal::TooMany(too_many("outputs", 1024)))
        );
        let ok = scan(&request(1024, 1024)).unwrap();
        assert_eq!(ok.model, "m");
        assert!(ok.overhead > 1024 * 100, "{}", ok.overhead);
    }

    #[test]
    fn empty_bytes_contents_are_counted_as_decoded() {
        let input = pb::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "BYTES".into(),
            shape: vec![1000],
            contents: Some(pb::InferTensorContents {
                bytes_contents: vec![Bytes::new(); 1000],
                ..Default::default()
            }),
            ..Default::default()
        };
        let msg = pb::ModelInferRequest {
            inputs: vec![input],
            ..Default::default()
        }
        .encode_to_vec();
        let s = scan(&msg).unwrap();
        assert!(s.overhead >= 1000 * size_of::<Bytes>(), "{}", s.overhead);
        assert!(msg.len() < 2100);
    }

    #[test]
    fn shapes_past_the_rank_limit_are_refused() {
        let input = |rank: usize| pb::model_infer_request::InferInputTensor {
            shape: vec![1; rank],
            ..Default::default()
        };
        let msg = |rank| {
            pb::ModelInferRequest {
                inputs: vec![input(rank)],
                ..Default::default()
            }
            .encode_to_vec()
        };
        assert!(scan(&msg(64)).is_ok());
        assert_eq!(scan(&msg(65)), Err(Refusal::TooMany(rank_too_large())));
    }

    #[test]
    fn truncated_messages_are_left_to_prost() {
        let msg = request(3, 0);
        assert_eq!(scan(&msg[..msg.len() - 1]), Err(Refusal::Malformed));
    }
}
