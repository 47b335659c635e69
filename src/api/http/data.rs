//! JSON tensor data ⇄ tensors: a request's `data` (flat or nested) parsed per datatype, and a
//! response's outputs serialised as flat arrays in their own element type.

use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use serde_json::Value;

use crate::tensor::{check_element_count, CountError, DataType, Element, Tensor, TensorError};

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
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Flattens nested arrays (row-major) into their leaves.
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        leaf => out.push(leaf),
    }
}

/// A tensor from a JSON `data` value (flat or nested, row-major) of `dtype` elements.
pub fn json_tensor(dtype: DataType, shape: Vec<usize>, data: &Value) -> Result<Tensor, DataError> {
    let mut leaves = Vec::new();
    flatten(data, &mut leaves);
    check_element_count(&shape, leaves.len(), "data has")?;
    fn ints<T: Element + TryFrom<i64> + TryFrom<u64>>(
        leaves: &[&Value],
        shape: Vec<usize>,
    ) -> Result<Tensor, DataError> {
        let values = leaves
            .iter()
            .map(|v| {
                let parsed = match (v.as_i64(), v.as_u64()) {
                    (Some(i), _) => T::try_from(i).ok(),
                    (None, Some(u)) => T::try_from(u).ok(),
                    _ => None,
                };
                parsed.ok_or_else(|| DataError::OutOfRange {
                    value: (*v).clone(),
                    dtype: T::DTYPE,
                })
            })
            .collect::<Result<Vec<T>, _>>()?;
        Ok(Tensor::from_values(shape, &values)?)
    }
    fn floats<T: Element>(
        leaves: &[&Value],
        shape: Vec<usize>,
        conv: fn(f64) -> T,
    ) -> Result<Tensor, DataError> {
        let values = leaves
            .iter()
            .map(|v| {
                v.as_f64()
                    .map(conv)
                    .ok_or_else(|| DataError::NotANumber((*v).clone()))
            })
            .collect::<Result<Vec<T>, _>>()?;
        Ok(Tensor::from_values(shape, &values)?)
    }
    match dtype {
        DataType::Bool => {
            let values = leaves
                .iter()
                .map(|v| {
                    v.as_bool()
                        .ok_or_else(|| DataError::NotABoolean((*v).clone()))
                })
                .collect::<Result<Vec<bool>, _>>()?;
            Ok(Tensor::from_values(shape, &values)?)
        }
        DataType::U8 => ints::<u8>(&leaves, shape),
        DataType::U16 => ints::<u16>(&leaves, shape),
        DataType::U32 => ints::<u32>(&leaves, shape),
        DataType::U64 => ints::<u64>(&leaves, shape),
        DataType::I8 => ints::<i8>(&leaves, shape),
        DataType::I16 => ints::<i16>(&leaves, shape),
        DataType::I32 => ints::<i32>(&leaves, shape),
        DataType::I64 => ints::<i64>(&leaves, shape),
        DataType::F16 => floats(&leaves, shape, half::f16::from_f64),
        DataType::F32 => floats(&leaves, shape, |f| f as f32),
        DataType::F64 => floats(&leaves, shape, |f| f),
        DataType::Bytes => {
            let items = leaves
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::as_bytes)
                        .ok_or_else(|| DataError::NotAString((*v).clone()))
                })
                .collect::<Result<Vec<&[u8]>, _>>()?;
            Ok(Tensor::from_byte_strings(shape, &items)?)
        }
    }
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
