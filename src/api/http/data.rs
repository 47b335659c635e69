//! JSON tensor data ⇄ tensors: a request's `data` (flat, or nested exactly as its shape) parsed
//! straight into the little-endian bytes of its datatype, never into a `serde_json::Value` tree
//! (a `Value` per element is ~24x the text); a response's outputs serialised as flat arrays in
//! their own element type.

use bytes::BytesMut;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::tensor::{
    check_element_count, expected_elements, CountError, DataType, Element, Tensor, TensorError,
};

/// Why an input's data does not make a tensor of its datatype and shape.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Count(#[from] CountError),
    #[error("{value} is not a valid {dtype}")]
    OutOfRange { value: Value, dtype: DataType },
    #[error("{0} is not a number")]
    NotANumber(Value),
    #[error("{0} is not a boolean")]
    NotABoolean(Value),
    #[error("{0} is not a string")]
    NotAString(Value),
    /// Nested `data` that does not follow the shape (ragged rows, wrong depth).
    #[error("{0}")]
    Nesting(String),
    #[error("malformed data: {0}")]
    Json(String),
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// One JSON scalar (or a stray object) where an element is expected.
enum Leaf<'a> {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(&'a str),
    Other(Value),
}

impl Leaf<'_> {
    fn value(&self) -> Value {
        match self {
            Leaf::U64(u) => Value::from(*u),
            Leaf::I64(i) => Value::from(*i),
            Leaf::F64(f) => Value::from(*f),
            Leaf::Bool(b) => Value::from(*b),
            Leaf::Str(s) => Value::from(*s),
            Leaf::Other(v) => v.clone(),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `[e, e, ...]` (or one bare element): only the count must match.
    Flat,
    /// `[[..], ..]`: every array at depth d holds exactly `shape[d]` items.
    Nested,
}

/// Where the elements go, and what the walk has found so far.
struct Sink<'s> {
    dtype: DataType,
    shape: &'s [usize],
    expected: usize,
    buf: BytesMut,
    count: usize,
    mode: Option<Mode>,
    /// Index path of the item being read, for messages (`data[1][3]`).
    path: Vec<usize>,
    /// The first element that does not convert; reported after the count.
    bad: Option<DataError>,
    /// A nesting error: reported at once (the walk stops).
    nesting: Option<String>,
}

impl Sink<'_> {
    fn at(&self) -> String {
        let mut s = String::from("data");
        for i in &self.path {
            s.push_str(&format!("[{i}]"));
        }
        s
    }

    fn leaf(&mut self, depth: usize, leaf: Leaf<'_>) -> Result<(), String> {
        if depth == 1 && self.mode.is_none() {
            self.mode = Some(Mode::Flat);
        }
        let rank = self.shape.len();
        if self.mode == Some(Mode::Nested) && depth < rank {
            let want = self.shape[depth];
            return Err(format!(
                "{} should be an array of {want} elements (shape {:?})",
                self.at(),
                self.shape
            ));
        }
        self.count += 1;
        if self.count > self.expected || self.bad.is_some() {
            return Ok(());
        }
        if let Err(e) = self.put(leaf) {
            self.bad = Some(e);
        }
        Ok(())
    }

    fn put(&mut self, leaf: Leaf<'_>) -> Result<(), DataError> {
        fn int<T: Element + TryFrom<i64> + TryFrom<u64>>(
            buf: &mut BytesMut,
            leaf: Leaf<'_>,
        ) -> Result<(), DataError> {
            let v = match leaf {
                Leaf::U64(u) => T::try_from(u).ok(),
                Leaf::I64(i) => T::try_from(i).ok(),
                _ => None,
            };
            match v {
                Some(v) => {
                    v.put_le(buf);
                    Ok(())
                }
                None => Err(DataError::OutOfRange {
                    value: leaf.value(),
                    dtype: T::DTYPE,
                }),
            }
        }
        fn float<T: Element>(
            buf: &mut BytesMut,
            leaf: Leaf<'_>,
            conv: fn(f64) -> Option<T>,
        ) -> Result<(), DataError> {
            let f = match leaf {
                Leaf::U64(u) => u as f64,
                Leaf::I64(i) => i as f64,
                Leaf::F64(f) => f,
                other => return Err(DataError::NotANumber(other.value())),
            };
            // JSON numbers are finite: one that rounds to infinity does not fit the type (1e6
            // as FP16), as an integer out of range does not.
            let v = conv(f).ok_or_else(|| DataError::OutOfRange {
                value: leaf.value(),
                dtype: T::DTYPE,
            })?;
            v.put_le(buf);
            Ok(())
        }
        let buf = &mut self.buf;
        match self.dtype {
            DataType::Bool => match leaf {
                Leaf::Bool(b) => {
                    b.put_le(buf);
                    Ok(())
                }
                other => Err(DataError::NotABoolean(other.value())),
            },
            DataType::U8 => int::<u8>(buf, leaf),
            DataType::U16 => int::<u16>(buf, leaf),
            DataType::U32 => int::<u32>(buf, leaf),
            DataType::U64 => int::<u64>(buf, leaf),
            DataType::I8 => int::<i8>(buf, leaf),
            DataType::I16 => int::<i16>(buf, leaf),
            DataType::I32 => int::<i32>(buf, leaf),
            DataType::I64 => int::<i64>(buf, leaf),
            DataType::F16 => float(buf, leaf, |f| {
                Some(half::f16::from_f64(f)).filter(|h| h.is_finite())
            }),
            DataType::F32 => float(buf, leaf, |f| Some(f as f32).filter(|x| x.is_finite())),
            DataType::F64 => float(buf, leaf, Some),
            DataType::Bytes => match leaf {
                Leaf::Str(s) => {
                    let len = u32::try_from(s.len())
                        .map_err(|_| TensorError::MalformedBytes("element over 4 GiB".into()))?;
                    buf.extend_from_slice(&len.to_le_bytes());
                    buf.extend_from_slice(s.as_bytes());
                    Ok(())
                }
                other => Err(DataError::NotAString(other.value())),
            },
        }
    }

    fn enter_array(&self, depth: usize) -> Result<Mode, String> {
        let mode = match self.mode {
            _ if depth == 0 => return Ok(Mode::Nested),
            None | Some(Mode::Nested) => Mode::Nested,
            Some(Mode::Flat) => {
                return Err(format!(
                    "{} is an array among elements: data must be flat or nested as shape {:?}",
                    self.at(),
                    self.shape
                ))
            }
        };
        if depth >= self.shape.len() {
            return Err(format!(
                "{} is nested deeper than shape {:?}",
                self.at(),
                self.shape
            ));
        }
        Ok(mode)
    }

    fn leave_array(&self, depth: usize, items: usize) -> Result<(), String> {
        if self.mode != Some(Mode::Nested) {
            return Ok(());
        }
        match self.shape.get(depth) {
            Some(&want) if want != items => Err(format!(
                "{} has {items} elements where shape {:?} needs {want}",
                self.at(),
                self.shape
            )),
            _ => Ok(()),
        }
    }
}

/// The value at one depth of `data`: an array (walked in place) or an element.
struct Level<'a, 's> {
    sink: &'a mut Sink<'s>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Level<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Level<'_, '_> {
    fn leaf<E: de::Error>(self, leaf: Leaf<'_>) -> Result<(), E> {
        self.sink.leaf(self.depth, leaf).map_err(|e| {
            self.sink.nesting = Some(e);
            E::custom("nesting")
        })
    }
}

impl<'de> Visitor<'de> for Level<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("tensor data")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(Leaf::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(Leaf::I64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(Leaf::F64(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.leaf(Leaf::Bool(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.leaf(Leaf::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf(Leaf::Other(Value::Null))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let v = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.leaf(Leaf::Other(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (sink, depth) = (self.sink, self.depth);
        let mode = sink.enter_array(depth).map_err(|e| {
            sink.nesting = Some(e);
            de::Error::custom("nesting")
        })?;
        if depth == 1 {
            sink.mode = Some(mode);
        }
        let mut items = 0;
        loop {
            sink.path.push(items);
            let more = seq.next_element_seed(Level {
                sink: &mut *sink,
                depth: depth + 1,
            })?;
            sink.path.pop();
            if more.is_none() {
                break;
            }
            items += 1;
        }
        sink.leave_array(depth, items).map_err(|e| {
            sink.nesting = Some(e);
            de::Error::custom("nesting")
        })
    }
}

/// A tensor from a JSON `data` value of `dtype` elements: flat (row-major), or nested with
/// every row exactly as long as its dimension (a ragged row is refused, not flattened away).
pub fn json_tensor(
    dtype: DataType,
    shape: Vec<usize>,
    data: &RawValue,
) -> Result<Tensor, DataError> {
    let expected = expected_elements(&shape)?;
    let text = data.get();
    // Each element takes at least two bytes of text ("0,"): a shape claiming more elements
    // than the text can hold reserves only what the text can fill.
    let capacity = expected
        .min(text.len() / 2 + 1)
        .saturating_mul(dtype.size().unwrap_or(8));
    let mut sink = Sink {
        dtype,
        shape: &shape,
        expected,
        buf: BytesMut::with_capacity(capacity),
        count: 0,
        mode: None,
        path: Vec::new(),
        bad: None,
        nesting: None,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let walked = Level {
        sink: &mut sink,
        depth: 0,
    }
    .deserialize(&mut de);
    if let Some(e) = sink.nesting {
        return Err(DataError::Nesting(e));
    }
    walked.map_err(|e| DataError::Json(e.to_string()))?;
    let (count, bad, buf) = (sink.count, sink.bad, sink.buf);
    check_element_count(&shape, count, "data has")?;
    if let Some(e) = bad {
        return Err(e);
    }
    Ok(Tensor::new(dtype, shape, buf.freeze())?)
}
/// Serialises tensor elements as a flat JSON array in their own type (f32 stays f32).
pub struct JsonData<'a>(pub &'a Tensor);

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let mut seq = s.serialize_seq(Some(t.element_count()))?;
        macro_rules! each {
            ($ty:ty) => {
                for v in t.to_vec::<$ty>().unwrap_or_default() {
                    seq.serialize_element(&v)?;
                }
            };
        }
        match t.dtype() {
            DataType::Bool => each!(bool),
            DataType::U8 => each!(u8),
            DataType::U16 => each!(u16),
            DataType::U32 => each!(u32),
            DataType::U64 => each!(u64),
            DataType::I8 => each!(i8),
            DataType::I16 => each!(i16),
            DataType::I32 => each!(i32),
            DataType::I64 => each!(i64),
            DataType::F16 => {
                for v in t.to_vec::<half::f16>().unwrap_or_default() {
                    seq.serialize_element(&v.to_f32())?;
                }
            }
            DataType::F32 => each!(f32),
            DataType::F64 => each!(f64),
            DataType::Bytes => {
                for b in t.byte_strings().unwrap_or_default() {
                    seq.serialize_element(&String::from_utf8_lossy(b))?;
                }
            }
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (fuzz/corpus/grpc_infer/fp64_round_trip): serde_json's default float
    /// parser misrounds some decimals by one ulp, so an FP64 sent as the server writes it came
    /// back a different number. Every f64 the encoder writes must decode to the same bits.
    #[test]
    fn fp64_data_decodes_to_the_exact_double_it_spells() {
        for x in [
            -9.086526321759823e33,
            2.2250738585072014e-308,
            0.1,
            f64::MAX,
        ] {
            let text = serde_json::to_string(&[x]).unwrap();
            let raw = RawValue::from_string(text.clone()).unwrap();
            let t = json_tensor(DataType::F64, vec![1], &raw).unwrap();
            assert_eq!(
                t.to_vec::<f64>().unwrap()[0].to_bits(),
                x.to_bits(),
                "{text}"
            );
        }
    }
}
