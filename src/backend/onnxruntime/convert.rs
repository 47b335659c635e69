//! Tensors across the ONNX Runtime boundary: our tensors as session inputs (borrowed when the
//! bytes are aligned, else copied) and session outputs back into ours.

use bytes::Bytes;
use ort::memory::Allocator;
use ort::session::SessionInputValue;
use ort::value::{
    DynTensor, DynTensorValueType, DynValue, PrimitiveTensorElementType, Tensor as OrtTensor,
    TensorElementType, TensorRef, ValueType,
};

use crate::backend::BackendError;
use crate::tensor::{DataType, Tensor};

pub(super) fn from_element(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::U8,
        TensorElementType::Uint16 => DataType::U16,
        TensorElementType::Uint32 => DataType::U32,
        TensorElementType::Uint64 => DataType::U64,
        TensorElementType::Int8 => DataType::I8,
        TensorElementType::Int16 => DataType::I16,
        TensorElementType::Int32 => DataType::I32,
        TensorElementType::Int64 => DataType::I64,
        TensorElementType::Float16 => DataType::F16,
        TensorElementType::Float32 => DataType::F32,
        TensorElementType::Float64 => DataType::F64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn to_element(dt: DataType) -> TensorElementType {
    match dt {
        DataType::Bool => TensorElementType::Bool,
        DataType::U8 => TensorElementType::Uint8,
        DataType::U16 => TensorElementType::Uint16,
        DataType::U32 => TensorElementType::Uint32,
        DataType::U64 => TensorElementType::Uint64,
        DataType::I8 => TensorElementType::Int8,
        DataType::I16 => TensorElementType::Int16,
        DataType::I32 => TensorElementType::Int32,
        DataType::I64 => TensorElementType::Int64,
        DataType::F16 => TensorElementType::Float16,
        DataType::F32 => TensorElementType::Float32,
        DataType::F64 => TensorElementType::Float64,
        DataType::Bytes => TensorElementType::String,
    }
}

fn run_err(what: &str) -> impl Fn(ort::Error) -> BackendError + '_ {
    move |e| BackendError::Run(format!("{what}: {e}"))
}

/// Our tensor as an ONNX Runtime input: a borrowed view of its bytes when they are aligned for
/// the element type (the usual case: request bodies are read into fresh buffers), else a copy.
pub(super) fn to_value(t: &Tensor) -> Result<SessionInputValue<'_>, BackendError> {
    let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    let view = match t.dtype() {
        DataType::F32 => view::<f32>(t, &shape)?,
        DataType::F64 => view::<f64>(t, &shape)?,
        DataType::I8 => view::<i8>(t, &shape)?,
        DataType::I16 => view::<i16>(t, &shape)?,
        DataType::I32 => view::<i32>(t, &shape)?,
        DataType::I64 => view::<i64>(t, &shape)?,
        DataType::U8 => view::<u8>(t, &shape)?,
        DataType::U16 => view::<u16>(t, &shape)?,
        DataType::U32 => view::<u32>(t, &shape)?,
        DataType::U64 => view::<u64>(t, &shape)?,
        // Not every byte is a valid `bool`: decode instead of reinterpreting.
        DataType::Bool => {
            let values: Vec<bool> = t.data().iter().map(|&b| b != 0).collect();
            let value = OrtTensor::from_array((shape, values)).map_err(run_err("BOOL input"))?;
            return Ok(value.into());
        }
        DataType::Bytes => {
            let items = t
                .byte_strings()
                .ok_or_else(|| BackendError::Run("malformed BYTES tensor".into()))?
                .into_iter()
                .map(|b| std::str::from_utf8(b).map(str::to_owned))
                .collect::<Result<Vec<String>, _>>()
                .map_err(|_| BackendError::Unsupported("BYTES input that is not UTF-8".into()))?;
            let value = OrtTensor::from_string_array((shape, items.as_slice()))
                .map_err(run_err("BYTES input"))?;
            return Ok(value.into());
        }
        // FP16 has no primitive Rust type here, so it is always copied.
        DataType::F16 => None,
    };
    match view {
        Some(v) => Ok(v),
        None => copy_in(t, shape),
    }
}

/// A zero-copy view of `t`'s bytes as `T`, or `None` when they are not aligned for `T`.
fn view<'a, T>(t: &'a Tensor, shape: &[i64]) -> Result<Option<SessionInputValue<'a>>, BackendError>
where
    T: PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static,
{
    let bytes: &'a [u8] = t.data();
    let size = std::mem::size_of::<T>();
    if cfg!(target_endian = "big")
        || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
        || !bytes.len().is_multiple_of(size)
    {
        return Ok(None);
    }
    // SAFETY: the pointer is aligned for `T` and the length is a whole number of `T`s (both
    // checked above); every bit pattern is a valid value of these numeric types; the wire's
    // little-endian order is the target's (checked above); the slice borrows `t`.
    let values =
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) };
    let value = TensorRef::from_array_view((shape.to_vec(), values)).map_err(run_err("input"))?;
    Ok(Some(value.into()))
}

/// A copy of `t`'s bytes in an ONNX Runtime-allocated tensor (for unaligned bytes and FP16).
fn copy_in(t: &Tensor, shape: Vec<i64>) -> Result<SessionInputValue<'static>, BackendError> {
    let ty = to_element(t.dtype());
    let mut value =
        DynTensor::new(&Allocator::default(), ty, shape).map_err(run_err("input tensor"))?;
    let bytes = t.data();
    if ty.byte_size(t.element_count()) != Some(bytes.len()) {
        return Err(BackendError::Run(format!(
            "input of {} bytes does not fill a {ty} tensor of shape {:?}",
            bytes.len(),
            t.shape()
        )));
    }
    if !bytes.is_empty() {
        // SAFETY: ONNX Runtime allocated `bytes.len()` bytes on the CPU for this tensor (the
        // size is checked above); the regions cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                value.data_ptr_mut().cast::<u8>(),
                bytes.len(),
            )
        };
    }
    Ok(value.into())
}

/// An output back into our tensor: numeric bytes are copied once out of ONNX Runtime's buffer,
/// in the element type the graph declares.
pub(super) fn from_value(value: &DynValue) -> Result<Tensor, BackendError> {
    let ValueType::Tensor { ty, shape, .. } = value.dtype() else {
        return Err(BackendError::Unsupported(format!(
            "output of type {}",
            value.dtype()
        )));
    };
    let dims = shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| BackendError::Run(format!("output shape {shape:?}")))?;
    let out = |r: Result<Tensor, crate::tensor::TensorError>| {
        r.map_err(|e| BackendError::Run(format!("output tensor: {e}")))
    };
    if *ty == TensorElementType::String {
        let (_, items) = value
            .try_extract_strings()
            .map_err(run_err("string output"))?;
        return out(Tensor::from_byte_strings(dims, &items));
    }
    let dtype = from_element(*ty)
        .ok_or_else(|| BackendError::Unsupported(format!("output element type {ty}")))?;
    let tensor = value
        .view()
        .downcast::<DynTensorValueType>()
        .map_err(run_err("output"))?;
    if !tensor.memory_info().is_cpu_accessible() {
        return Err(BackendError::Run("output left on the device".into()));
    }
    let len = ty
        .byte_size(shape.num_elements())
        .ok_or_else(|| BackendError::Unsupported(format!("output element type {ty}")))?;
    let data = if len == 0 {
        Bytes::new()
    } else {
        // SAFETY: ONNX Runtime holds `len` bytes of this CPU tensor at `data_ptr` for as long as
        // `value` lives, which outlasts this copy.
        Bytes::copy_from_slice(unsafe {
            std::slice::from_raw_parts(tensor.data_ptr().cast::<u8>(), len)
        })
    };
    out(Tensor::new(dtype, dims, data))
}
