//! A feature's values read straight out of a tensor's little-endian bytes, row by row, with no
//! allocation: a column of a `[batch, columns]` tensor, a row's single value, or a per-row
//! summary (mean, standard deviation, L2 norm) of a wider row.

use super::profile::{Source, Summary};
use crate::tensor::{DataType, Tensor};

/// An element type read as f64.
trait Num {
    const SIZE: usize;
    fn read(b: &[u8]) -> f64;
}

macro_rules! num {
    ($t:ty) => {
        impl Num for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn read(b: &[u8]) -> f64 {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..Self::SIZE]);
                <$t>::from_le_bytes(a) as f64
            }
        }
    };
}
num!(f32);
num!(f64);
num!(i8);
num!(i16);
num!(i32);
num!(i64);
num!(u8);
num!(u16);
num!(u32);
num!(u64);

struct F16;
impl Num for F16 {
    const SIZE: usize = 2;
    fn read(b: &[u8]) -> f64 {
        half::f16::from_le_bytes([b[0], b[1]]).to_f64()
    }
}

/// Rows and values per row of `t` (a scalar is one row of one value).
pub fn row_layout(shape: &[usize]) -> (usize, usize) {
    let rows = shape.first().copied().unwrap_or(1);
    let width = shape.get(1..).map_or(1, |d| d.iter().product());
    (rows, width)
}

/// Calls `f` with the feature's value of every row; false when the tensor does not have the
/// feature (a column past its width, a value of a wide row, a BYTES tensor).
pub fn for_each_value(t: &Tensor, source: Source, f: impl FnMut(f64)) -> bool {
    let (rows, width) = row_layout(t.shape());
    let data: &[u8] = t.data();
    match t.dtype() {
        DataType::F32 => walk::<f32>(data, rows, width, source, f),
        DataType::F64 => walk::<f64>(data, rows, width, source, f),
        DataType::F16 => walk::<F16>(data, rows, width, source, f),
        DataType::I8 => walk::<i8>(data, rows, width, source, f),
        DataType::I16 => walk::<i16>(data, rows, width, source, f),
        DataType::I32 => walk::<i32>(data, rows, width, source, f),
        DataType::I64 => walk::<i64>(data, rows, width, source, f),
        DataType::U8 | DataType::Bool => walk::<u8>(data, rows, width, source, f),
        DataType::U16 => walk::<u16>(data, rows, width, source, f),
        DataType::U32 => walk::<u32>(data, rows, width, source, f),
        DataType::U64 => walk::<u64>(data, rows, width, source, f),
        DataType::Bytes => false,
    }
}

fn walk<T: Num>(
    data: &[u8],
    rows: usize,
    width: usize,
    source: Source,
    mut f: impl FnMut(f64),
) -> bool {
    if width == 0 || data.len() < rows.saturating_mul(width).saturating_mul(T::SIZE) {
        return false;
    }
    let row_bytes = width * T::SIZE;
    match source {
        Source::Value if width == 1 => data
            .chunks_exact(T::SIZE)
            .take(rows)
            .for_each(|b| f(T::read(b))),
        Source::Column(c) if c < width => data
            .chunks_exact(row_bytes)
            .take(rows)
            .for_each(|row| f(T::read(&row[c * T::SIZE..]))),
        Source::Summary(s) => {
            for row in data.chunks_exact(row_bytes).take(rows) {
                let (mut sum, mut squares) = (0.0, 0.0);
                for b in row.chunks_exact(T::SIZE) {
                    let x = T::read(b);
                    sum += x;
                    squares += x * x;
                }
                let n = width as f64;
                f(match s {
                    Summary::Mean => sum / n,
                    Summary::Std => (squares / n - (sum / n).powi(2)).max(0.0).sqrt(),
                    Summary::Norm => squares.sqrt(),
                });
            }
        }
        _ => return false,
    }
    true
}

/// Calls `f` with the feature's element of every row of a BYTES tensor (a value or a column).
pub fn for_each_bytes(t: &Tensor, source: Source, mut f: impl FnMut(&[u8])) -> bool {
    if t.dtype() != DataType::Bytes {
        return false;
    }
    let (_, width) = row_layout(t.shape());
    let column = match source {
        Source::Value if width == 1 => 0,
        Source::Column(c) if c < width => c,
        _ => return false,
    };
    let mut rest: &[u8] = t.data();
    let mut index = 0usize;
    while rest.len() >= 4 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(item) = rest.get(4..4 + len) else {
            return false;
        };
        if index % width == column {
            f(item);
        }
        rest = &rest[4 + len..];
        index += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_values_and_summaries_are_read_per_row() {
        let t = Tensor::from_values(vec![2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let mut got = Vec::new();
        assert!(for_each_value(&t, Source::Column(1), |x| got.push(x)));
        assert_eq!(got, [2.0, 4.0]);
        got.clear();
        assert!(for_each_value(&t, Source::Summary(Summary::Mean), |x| got.push(x)));
        assert_eq!(got, [1.5, 3.5]);
        assert!(!for_each_value(&t, Source::Column(2), |_| ()));
        assert!(!for_each_value(&t, Source::Value, |_| ()));
        let s = Tensor::from_byte_strings(vec![2, 1], &["a", "bc"]).unwrap();
        let mut items = Vec::new();
        assert!(for_each_bytes(&s, Source::Value, |b| items.push(b.to_vec())));
        assert_eq!(items, [b"a".to_vec(), b"bc".to_vec()]);
    }
}
