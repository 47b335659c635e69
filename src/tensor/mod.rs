//! Tensors as the core sees them: a datatype, a shape and little-endian bytes, with no knowledge
//! of JSON or protobuf. Also the row operations batching needs (concatenate and split along dim 0).

mod dtype;

use bytes::{Bytes, BytesMut};

pub use dtype::{DataType, Element};

/// Why a tensor could not be built from what a client sent.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TensorError {
    #[error("shape {shape:?} has too many elements")]
    Overflow { shape: Vec<usize> },
    #[error("{dtype} tensor of shape {shape:?} needs {expected} bytes, got {actual}")]
    ByteSize {
        dtype: DataType,
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error("BYTES tensor of shape {shape:?} needs {expected} elements, got {actual}")]
    ElementCount {
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error("BYTES tensor data is malformed: {0}")]
    MalformedBytes(String),
    #[error("cannot combine tensors: {0}")]
    Incompatible(String),
}

/// A dense tensor in row-major order. For BYTES the data holds the length-prefixed elements.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    dtype: DataType,
    shape: Vec<usize>,
    data: Bytes,
}

/// Converts a wire shape to dimensions, refusing negative ones.
pub fn shape_from_wire(shape: &[i64]) -> Result<Vec<usize>, String> {
    shape
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| format!("dimension {d} in shape {shape:?} is negative"))
        })
        .collect()
}

/// Number of elements of `shape`, or `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Why typed data (JSON `data`, gRPC `contents`) does not fill its shape; both transports word
/// it the same way.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CountError {
    #[error("shape {0:?} is too large")]
    TooLarge(Vec<usize>),
    /// `counted` names what was counted, for the message ("data has", "contents have").
    #[error("shape {shape:?} needs {expected} elements, {counted} {given}")]
    Mismatch {
        shape: Vec<usize>,
        expected: usize,
        given: usize,
        counted: &'static str,
    },
}

/// Number of elements of `shape`, refusing one whose count overflows.
pub fn expected_elements(shape: &[usize]) -> Result<usize, CountError> {
    element_count(shape).ok_or_else(|| CountError::TooLarge(shape.to_vec()))
}

/// Checks that typed data of `given` elements fills `shape` exactly.
pub fn check_element_count(
    shape: &[usize],
    given: usize,
    counted: &'static str,
) -> Result<(), CountError> {
    let expected = expected_elements(shape)?;
    if given == expected {
        Ok(())
    } else {
        Err(CountError::Mismatch {
            shape: shape.to_vec(),
            expected,
            given,
            counted,
        })
    }
}

impl Tensor {
    /// Builds a tensor, checking that `data` holds exactly the elements `shape` calls for.
    pub fn new(dtype: DataType, shape: Vec<usize>, data: Bytes) -> Result<Tensor, TensorError> {
        let count = element_count(&shape).ok_or_else(|| TensorError::Overflow {
            shape: shape.clone(),
        })?;
        match dtype.size() {
            Some(size) => {
                let expected = count
                    .checked_mul(size)
                    .ok_or_else(|| TensorError::Overflow {
                        shape: shape.clone(),
                    })?;
                if data.len() != expected {
                    return Err(TensorError::ByteSize {
                        dtype,
                        shape,
                        expected,
                        actual: data.len(),
                    });
                }
            }
            None => {
                let actual = count_bytes_elements(&data)?;
                if actual != count {
                    return Err(TensorError::ElementCount {
                        shape,
                        expected: count,
                        actual,
                    });
                }
            }
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// Builds a tensor from typed values (used by backends and tests).
    pub fn from_values<T: Element>(shape: Vec<usize>, values: &[T]) -> Result<Tensor, TensorError> {
        let mut buf = BytesMut::with_capacity(std::mem::size_of_val(values));
        for v in values {
            v.put_le(&mut buf);
        }
        Tensor::new(T::DTYPE, shape, buf.freeze())
    }

    /// Builds a BYTES tensor from its elements.
    pub fn from_byte_strings<S: AsRef<[u8]>>(
        shape: Vec<usize>,
        items: &[S],
    ) -> Result<Tensor, TensorError> {
        let mut buf = BytesMut::new();
        for item in items {
            let item = item.as_ref();
            let len = u32::try_from(item.len())
                .map_err(|_| TensorError::MalformedBytes("element over 4 GiB".into()))?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(item);
        }
        Tensor::new(DataType::Bytes, shape, buf.freeze())
    }

    pub fn dtype(&self) -> DataType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Raw little-endian bytes (length-prefixed elements for BYTES).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    pub fn element_count(&self) -> usize {
        // Invariant from `new`: the shape's element count did not overflow.
        element_count(&self.shape).unwrap_or(0)
    }

    /// Rows along dimension 0 (a scalar counts as one).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Decodes the elements as `T`, or `None` if the datatype is not `T`'s.
    pub fn to_vec<T: Element>(&self) -> Option<Vec<T>> {
        if self.dtype != T::DTYPE {
            return None;
        }
        Some(self.data.chunks_exact(T::SIZE).map(T::from_le).collect())
    }

    /// The elements of a BYTES tensor.
    pub fn byte_strings(&self) -> Option<Vec<&[u8]>> {
        if self.dtype != DataType::Bytes {
            return None;
        }
        let mut out = Vec::with_capacity(self.element_count());
        let mut rest: &[u8] = &self.data;
        while !rest.is_empty() {
            let (item, tail) = split_bytes_element(rest, out.len()).ok()?;
            out.push(item);
            rest = tail;
        }
        Some(out)
    }

    /// Concatenates tensors of one datatype and equal trailing dims along dimension 0.
    pub fn concat(parts: &[Tensor]) -> Result<Tensor, TensorError> {
        let first = parts
            .first()
            .ok_or_else(|| TensorError::Incompatible("nothing to concatenate".into()))?;
        if parts.len() == 1 {
            return Ok(first.clone());
        }
        let mut rows = 0usize;
        let mut len = 0usize;
        for p in parts {
            if p.dtype != first.dtype
                || p.shape.len() != first.shape.len()
                || p.shape.get(1..) != first.shape.get(1..)
            {
                return Err(TensorError::Incompatible(format!(
                    "{} {:?} and {} {:?}",
                    first.dtype, first.shape, p.dtype, p.shape
                )));
            }
            rows += p.rows();
            len += p.data.len();
        }
        let mut buf = BytesMut::with_capacity(len);
        for p in parts {
            buf.extend_from_slice(&p.data);
        }
        let mut shape = first.shape.clone();
        if let Some(d0) = shape.first_mut() {
            *d0 = rows;
        }
        Tensor::new(first.dtype, shape, buf.freeze())
    }

    /// Splits along dimension 0 into consecutive pieces of `rows[i]` rows, sharing the buffer.
    pub fn split(&self, rows: &[usize]) -> Result<Vec<Tensor>, TensorError> {
        let total: usize = rows.iter().sum();
        if self.shape.is_empty() || total != self.rows() {
            return Err(TensorError::Incompatible(format!(
                "cannot split shape {:?} into {rows:?} rows",
                self.shape
            )));
        }
        let row_elems = element_count(&self.shape[1..]).unwrap_or(0);
        let mut out = Vec::with_capacity(rows.len());
        let mut offset = 0usize;
        let mut rest: &[u8] = &self.data;
        for &r in rows {
            let mut shape = self.shape.clone();
            shape[0] = r;
            let len = match self.dtype.size() {
                Some(size) => r * row_elems * size,
                None => bytes_prefix_len(rest, r * row_elems)?,
            };
            out.push(Tensor {
                dtype: self.dtype,
                shape,
                data: self.data.slice(offset..offset + len),
            });
            offset += len;
            rest = &rest[len..];
        }
        Ok(out)
    }
}

/// The first length-prefixed element of `buf` (element `index` of its tensor) and the rest.
/// Messages follow Triton's ("incomplete string length indicator ...").
fn split_bytes_element(buf: &[u8], index: usize) -> Result<(&[u8], &[u8]), TensorError> {
    let (len, rest) = buf.split_first_chunk::<4>().ok_or_else(|| {
        TensorError::MalformedBytes(format!(
            "incomplete string length indicator for element {index}, expecting 4 bytes but only {} bytes available",
            buf.len()
        ))
    })?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err(TensorError::MalformedBytes(format!(
            "incomplete string data for element {index}, expecting {len} bytes but only {} bytes available",
            rest.len()
        )));
    }
    Ok(rest.split_at(len))
}

fn count_bytes_elements(mut buf: &[u8]) -> Result<usize, TensorError> {
    let mut n = 0;
    while !buf.is_empty() {
        buf = split_bytes_element(buf, n)?.1;
        n += 1;
    }
    Ok(n)
}

/// Byte length of the first `count` length-prefixed elements of `buf`.
fn bytes_prefix_len(buf: &[u8], count: usize) -> Result<usize, TensorError> {
    let mut rest = buf;
    for i in 0..count {
        rest = split_bytes_element(rest, i)?.1;
    }
    Ok(buf.len() - rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rejects_wrong_byte_size() {
        let err = Tensor::new(DataType::F32, vec![2, 2], Bytes::from(vec![0u8; 12])).unwrap_err();
        assert_eq!(
            err,
            TensorError::ByteSize {
                dtype: DataType::F32,
                shape: vec![2, 2],
                expected: 16,
                actual: 12
            }
        );
    }

    #[test]
    fn new_rejects_overflowing_shape() {
        let err = Tensor::new(DataType::F32, vec![usize::MAX, 2], Bytes::new()).unwrap_err();
        assert!(matches!(err, TensorError::Overflow { .. }));
    }

    #[test]
    fn concat_then_split_round_trips() {
        let a = Tensor::from_values(vec![1, 3], &[1f32, 2., 3.]).unwrap();
        let b = Tensor::from_values(vec![2, 3], &[4f32, 5., 6., 7., 8., 9.]).unwrap();
        let c = Tensor::concat(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(c.shape(), &[3, 3]);
        assert_eq!(c.split(&[1, 2]).unwrap(), vec![a, b]);
    }

    #[test]
    fn concat_rejects_different_trailing_dims() {
        let a = Tensor::from_values(vec![1, 3], &[1f32, 2., 3.]).unwrap();
        let b = Tensor::from_values(vec![1, 2], &[1f32, 2.]).unwrap();
        assert!(Tensor::concat(&[a, b]).is_err());
    }

    #[test]
    fn bytes_tensors_count_elements_and_split() {
        let t = Tensor::from_byte_strings(vec![3], &["a", "bcd", ""]).unwrap();
        assert_eq!(t.byte_strings().unwrap(), vec![&b"a"[..], b"bcd", b""]);
        let parts = t.split(&[2, 1]).unwrap();
        assert_eq!(parts[1].byte_strings().unwrap(), vec![&b""[..]]);
        assert!(Tensor::from_byte_strings(vec![2], &["a"]).is_err());
        assert!(Tensor::new(
            DataType::Bytes,
            vec![1],
            Bytes::from_static(&[5, 0, 0, 0, 1])
        )
        .is_err());
    }

    #[test]
    fn element_counts_are_checked_against_the_shape() {
        assert_eq!(check_element_count(&[2, 3], 6, "data has"), Ok(()));
        assert_eq!(
            check_element_count(&[2, 3], 5, "contents have").map_err(|e| e.to_string()),
            Err("shape [2, 3] needs 6 elements, contents have 5".into())
        );
        assert_eq!(
            check_element_count(&[usize::MAX, 2], 0, "data has").map_err(|e| e.to_string()),
            Err(format!("shape {:?} is too large", [usize::MAX, 2]))
        );
    }
}
