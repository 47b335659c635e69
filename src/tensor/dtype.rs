//! The Open Inference Protocol's datatypes: their names (the wire's `FP32` and the config's
//! Triton spelling `TYPE_FP32`), sizes, and the fixed-size element types with their
//! little-endian form.

use std::fmt;

use bytes::BytesMut;

/// The Open Inference Protocol's tensor datatypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    F32,
    F64,
    /// Variable-length byte strings, each serialised as a 4-byte little-endian length + bytes.
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::U8,
        DataType::U16,
        DataType::U32,
        DataType::U64,
        DataType::I8,
        DataType::I16,
        DataType::I32,
        DataType::I64,
        DataType::F16,
        DataType::F32,
        DataType::F64,
        DataType::Bytes,
    ];

    /// The protocol's name: `FP32`, `INT64`, `BYTES`...
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::U8 => "UINT8",
            DataType::U16 => "UINT16",
            DataType::U32 => "UINT32",
            DataType::U64 => "UINT64",
            DataType::I8 => "INT8",
            DataType::I16 => "INT16",
            DataType::I32 => "INT32",
            DataType::I64 => "INT64",
            DataType::F16 => "FP16",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Triton's model-configuration name (`TYPE_FP32`; BYTES is `TYPE_STRING` there).
    pub fn config_name(self) -> &'static str {
        match self {
            DataType::Bool => "TYPE_BOOL",
            DataType::U8 => "TYPE_UINT8",
            DataType::U16 => "TYPE_UINT16",
            DataType::U32 => "TYPE_UINT32",
            DataType::U64 => "TYPE_UINT64",
            DataType::I8 => "TYPE_INT8",
            DataType::I16 => "TYPE_INT16",
            DataType::I32 => "TYPE_INT32",
            DataType::I64 => "TYPE_INT64",
            DataType::F16 => "TYPE_FP16",
            DataType::F32 => "TYPE_FP32",
            DataType::F64 => "TYPE_FP64",
            DataType::Bytes => "TYPE_STRING",
        }
    }

    pub fn parse(s: &str) -> Option<DataType> {
        let s = s.strip_prefix("TYPE_").unwrap_or(s);
        if s == "STRING" {
            return Some(DataType::Bytes);
        }
        DataType::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// A datatype as a client names it, on either transport. [`DataType::parse`] also takes the
    /// model-configuration spelling (`TYPE_FP32`) for `config.toml`; the protocol does not.
    pub fn from_wire(s: &str) -> Result<DataType, String> {
        DataType::parse(s)
            .filter(|_| !s.starts_with("TYPE_"))
            .ok_or_else(|| format!("unknown datatype {s:?}"))
    }

    /// Bytes per element; `None` for BYTES, whose elements vary in size.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 | DataType::F16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::U64 | DataType::I64 | DataType::F64 => 8,
            DataType::Bytes => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fixed-size element type with a little-endian wire form.
pub trait Element: Copy {
    const DTYPE: DataType;
    const SIZE: usize;
    fn put_le(self, buf: &mut BytesMut);
    /// `bytes` is exactly `SIZE` long (callers use `chunks_exact`).
    fn from_le(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $dt:expr) => {
        impl Element for $t {
            const DTYPE: DataType = $dt;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put_le(self, buf: &mut BytesMut) {
                buf.extend_from_slice(&self.to_le_bytes());
            }
            fn from_le(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
        }
    };
}

element!(u8, DataType::U8);
element!(u16, DataType::U16);
element!(u32, DataType::U32);
element!(u64, DataType::U64);
element!(i8, DataType::I8);
element!(i16, DataType::I16);
element!(i32, DataType::I32);
element!(i64, DataType::I64);
element!(half::f16, DataType::F16);
element!(f32, DataType::F32);
element!(f64, DataType::F64);

impl Element for bool {
    const DTYPE: DataType = DataType::Bool;
    const SIZE: usize = 1;
    fn put_le(self, buf: &mut BytesMut) {
        buf.extend_from_slice(&[u8::from(self)]);
    }
    fn from_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_parse_both_forms() {
        for dt in DataType::ALL {
            assert_eq!(DataType::parse(dt.as_str()), Some(dt));
            assert_eq!(DataType::parse(dt.config_name()), Some(dt));
        }
        assert_eq!(DataType::parse("FP128"), None);
    }

    #[test]
    fn wire_datatypes_refuse_the_config_spelling() {
        for dt in DataType::ALL {
            assert_eq!(DataType::from_wire(dt.as_str()), Ok(dt));
        }
        assert_eq!(
            DataType::from_wire("TYPE_FP32"),
            Err("unknown datatype \"TYPE_FP32\"".into())
        );
        assert_eq!(
            DataType::from_wire("FP128"),
            Err("unknown datatype \"FP128\"".into())
        );
    }
}
