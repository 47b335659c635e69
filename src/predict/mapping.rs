//! Columns to the model's inputs and outputs to columns. An input takes, in order: the columns
//! `--columns` names for it; else the column of its own name (one value per row); else, for a
//! model of one input, every numeric column (text columns for a BYTES input) that is not a
//! `--keep` column, in file order. Outputs become one column per element of a row
//! (`probabilities_0`, `probabilities_1`, ...; a one-element output keeps its name).

use std::collections::BTreeMap;

use half::f16;

use crate::dataio::{Batch, Column, Kind, Reader, RowError, Values};
use crate::registry::{Signature, TensorSpec};
use crate::routing::NamedTensor;
use crate::tensor::{DataType, Tensor};

/// One model input and the columns that feed it.
#[derive(Debug, Clone)]
pub struct InputPlan {
    pub spec: TensorSpec,
    /// Values per row (the product of the input's dims).
    pub width: usize,
    pub columns: Vec<String>,
}

/// `--columns` as given: `INPUT=COL,COL` or, for a model of one input, `COL,COL`.
pub fn parse_columns(specs: &[String]) -> Result<BTreeMap<Option<String>, Vec<String>>, String> {
    let mut out = BTreeMap::new();
    for s in specs {
        let (input, cols) = match s.split_once('=') {
            Some((i, c)) => (Some(i.trim().to_owned()), c),
            None => (None, s.as_str()),
        };
        let cols: Vec<String> = cols
            .split(',')
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        if cols.is_empty() {
            return Err(format!("--columns {s:?}: no column names"));
        }
        if out.insert(input.clone(), cols).is_some() {
            return Err(format!("--columns names input {input:?} twice"));
        }
    }
    Ok(out)
}

fn width(spec: &TensorSpec) -> Result<usize, String> {
    spec.dims.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d)
            .ok()
            .filter(|&d| d > 0)
            .and_then(|d| acc.checked_mul(d))
            .ok_or_else(|| {
                format!(
                    "input {:?} has dims {:?}: a fixed number of values per row is needed",
                    spec.name, spec.dims
                )
            })
    })
}

/// The kinds wanted before any row is read: `--keep` columns as text in text formats (kept as
/// written), and the columns named for inputs.
pub fn preset_kinds(
    reader: &mut Reader,
    signature: &Signature,
    columns: &BTreeMap<Option<String>, Vec<String>>,
    keep: &[String],
) -> Result<(), String> {
    let names = reader.columns().to_vec();
    for k in keep {
        if !names.contains(k) {
            return Err(format!(
                "--keep {k:?}: no such column (columns: {})",
                names.join(", ")
            ));
        }
        if reader.format().is_text() {
            reader.set_kind(k, Kind::Text);
        }
    }
    for spec in &signature.inputs {
        let kind = if spec.dtype == DataType::Bytes {
            Kind::Text
        } else {
            Kind::Number
        };
        let named = columns
            .get(&Some(spec.name.clone()))
            .or_else(|| columns.get(&None).filter(|_| signature.inputs.len() == 1));
        let cols = match named {
            Some(c) => c.clone(),
            None if names.contains(&spec.name) => vec![spec.name.clone()],
            None => continue,
        };
        for c in &cols {
            if !names.contains(c) {
                return Err(format!(
                    "--columns: no column {c:?} for input {:?} (columns: {})",
                    spec.name,
                    names.join(", ")
                ));
            }
            reader.set_kind(c, kind);
        }
    }
    Ok(())
}

/// The plan from the first batch (which tells the types of the columns left to infer).
pub fn plan(
    signature: &Signature,
    columns: &BTreeMap<Option<String>, Vec<String>>,
    keep: &[String],
    first: &Batch,
    all_names: &[String],
) -> Result<Vec<InputPlan>, String> {
    if let Some(Some(unknown)) = columns.keys().find(|k| {
        k.as_ref()
            .is_some_and(|k| !signature.inputs.iter().any(|s| &s.name == k))
    }) {
        let known: Vec<&str> = signature.inputs.iter().map(|s| s.name.as_str()).collect();
        return Err(format!(
            "--columns: the model has no input {unknown:?} (inputs: {})",
            known.join(", ")
        ));
    }
    if columns.contains_key(&None) && signature.inputs.len() != 1 {
        return Err("--columns without INPUT= is for models of one input".into());
    }
    let mut plans = Vec::new();
    for spec in &signature.inputs {
        let width = width(spec)?;
        let text = spec.dtype == DataType::Bytes;
        let named = columns
            .get(&Some(spec.name.clone()))
            .or_else(|| columns.get(&None));
        let cols = match named {
            Some(c) => c.clone(),
            None if all_names.contains(&spec.name) => vec![spec.name.clone()],
            None if signature.inputs.len() == 1 => first
                .columns
                .iter()
                .filter(|c| !keep.contains(&c.name))
                .filter(|c| matches!(c.values, Values::Str(_)) == text)
                .map(|c| c.name.clone())
                .collect(),
            None => {
                return Err(format!(
                    "no column {:?} for the model's input of that name; map it with --columns {}=COL,...",
                    spec.name, spec.name
                ))
            }
        };
        if cols.len() != width {
            return Err(format!(
                "input {:?} takes {width} value(s) per row ({} {:?}); {} column(s) map to it: {}{}",
                spec.name,
                spec.dtype,
                spec.dims,
                cols.len(),
                cols.join(", "),
                if named.is_none() && signature.inputs.len() == 1 {
                    format!(
                        " (every {} column not kept; name them with --columns)",
                        if text { "text" } else { "numeric" }
                    )
                } else {
                    String::new()
                }
            ));
        }
        plans.push(InputPlan {
            spec: spec.clone(),
            width,
            columns: cols,
        });
    }
    Ok(plans)
}

/// Kinds after the plan: the mapped columns as their inputs need, keep columns as read,
/// everything else skipped.
pub fn final_kinds(reader: &mut Reader, plans: &[InputPlan], keep: &[String]) {
    let names = reader.columns().to_vec();
    for n in &names {
        if !keep.contains(n) {
            reader.set_kind(n, Kind::Skip);
        }
    }
    for p in plans {
        let kind = if p.spec.dtype == DataType::Bytes {
            Kind::Text
        } else {
            Kind::Number
        };
        for c in &p.columns {
            reader.set_kind(c, kind);
        }
    }
}

/// Rows whose values the input's type cannot hold (a fraction or NaN for an integer input).
pub fn check_rows(batch: &Batch, plans: &[InputPlan]) -> Vec<RowError> {
    let mut errors = Vec::new();
    for p in plans {
        let integer = !matches!(
            p.spec.dtype,
            DataType::F16 | DataType::F32 | DataType::F64 | DataType::Bytes
        );
        if !integer {
            continue;
        }
        for c in &p.columns {
            let Some(col) = batch.column(c) else { continue };
            for i in 0..batch.rows {
                if let Some(x) = col
                    .values
                    .f64_at(i)
                    .filter(|x| x.fract() != 0.0 || x.is_nan())
                {
                    errors.push(RowError {
                        row: batch.first_row + i as u64,
                        line: None,
                        message: format!(
                            "column {c:?}: {x} is not an integer (input {:?} is {})",
                            p.spec.name, p.spec.dtype
                        ),
                    });
                }
            }
        }
    }
    errors
}

/// The request's input tensors for a batch, row-major per input.
pub fn tensors(batch: &Batch, plans: &[InputPlan]) -> Result<Vec<NamedTensor>, String> {
    let rows = batch.rows;
    let mut out = Vec::with_capacity(plans.len());
    for p in plans {
        let cols: Vec<&Values> = p
            .columns
            .iter()
            .map(|c| {
                batch
                    .column(c)
                    .map(|c| &c.values)
                    .ok_or_else(|| format!("column {c:?} was not read"))
            })
            .collect::<Result<_, _>>()?;
        let mut shape = vec![rows];
        shape.extend(p.spec.dims.iter().map(|&d| d as usize));
        let n = rows * p.width;
        let num = |i: usize| -> f64 {
            let (r, c) = (i / p.width, i % p.width);
            cols[c].f64_at(r).unwrap_or(f64::NAN)
        };
        let tensor = match p.spec.dtype {
            DataType::Bytes => {
                let mut items: Vec<&str> = Vec::with_capacity(n);
                for r in 0..rows {
                    for c in &cols {
                        match c {
                            Values::Str(v) => items.push(v[r].as_str()),
                            _ => {
                                return Err(format!(
                                    "input {:?}: a column is not text",
                                    p.spec.name
                                ))
                            }
                        }
                    }
                }
                Tensor::from_byte_strings(shape, &items)
            }
            DataType::F32 => {
                Tensor::from_values(shape, &(0..n).map(|i| num(i) as f32).collect::<Vec<_>>())
            }
            DataType::F64 => Tensor::from_values(shape, &(0..n).map(num).collect::<Vec<_>>()),
            DataType::F16 => Tensor::from_values(
                shape,
                &(0..n).map(|i| f16::from_f64(num(i))).collect::<Vec<_>>(),
            ),
            DataType::I64 => {
                Tensor::from_values(shape, &(0..n).map(|i| num(i) as i64).collect::<Vec<_>>())
            }
            DataType::I32 => {
                Tensor::from_values(shape, &(0..n).map(|i| num(i) as i32).collect::<Vec<_>>())
            }
            DataType::I16 => {
                Tensor::from_values(shape, &(0..n).map(|i| num(i) as i16).collect::<Vec<_>>())
            }
            DataType::I8 => {
                Tensor::from_values(shape, &(0..n).map(|i| num(i) as i8).collect::<Vec<_>>())
            }
            DataType::U8 => {
                Tensor::from_values(shape, &(0..n).map(|i| num(i) as u8).collect::<Vec<_>>())
            }
            DataType::U16 => {
                Tensor::from_values(shape, &(0..n).map(|i| num(i) as u16).collect::<Vec<_>>())
            }
            DataType::U32 => {
                Tensor::from_values(shape, &(0..n).map(|i| num(i) as u32).collect::<Vec<_>>())
            }
            DataType::U64 => {
                Tensor::from_values(shape, &(0..n).map(|i| num(i) as u64).collect::<Vec<_>>())
            }
            DataType::Bool => {
                Tensor::from_values(shape, &(0..n).map(|i| num(i) != 0.0).collect::<Vec<_>>())
            }
        }
        .map_err(|e| format!("input {:?}: {e}", p.spec.name))?;
        out.push(NamedTensor {
            name: p.spec.name.clone(),
            tensor,
        });
    }
    Ok(out)
}

/// The output columns of one answer: `rows` rows each.
pub fn output_columns(outputs: &[NamedTensor], rows: usize) -> Result<Vec<Column>, String> {
    let mut columns = Vec::new();
    for o in outputs {
        let t = &o.tensor;
        if rows == 0 || t.shape().first() != Some(&rows) {
            return Err(format!(
                "output {:?} has shape {:?}, not {rows} rows",
                o.name,
                t.shape()
            ));
        }
        let width = t.element_count() / rows;
        let values = output_values(t).ok_or_else(|| format!("output {:?}: unreadable", o.name))?;
        for c in 0..width {
            let pick = |r: usize| r * width + c;
            let v = match &values {
                Values::F32(v) => Values::F32((0..rows).map(|r| v[pick(r)]).collect()),
                Values::F64(v) => Values::F64((0..rows).map(|r| v[pick(r)]).collect()),
                Values::I64(v) => Values::I64((0..rows).map(|r| v[pick(r)]).collect()),
                Values::Str(v) => Values::Str((0..rows).map(|r| v[pick(r)].clone()).collect()),
            };
            columns.push(Column {
                name: if width == 1 {
                    o.name.clone()
                } else {
                    format!("{}_{c}", o.name)
                },
                values: v,
            });
        }
    }
    Ok(columns)
}

fn output_values(t: &Tensor) -> Option<Values> {
    let ints = |v: Vec<i64>| Some(Values::I64(v));
    match t.dtype() {
        DataType::F32 => Some(Values::F32(t.to_vec::<f32>()?)),
        DataType::F64 => Some(Values::F64(t.to_vec::<f64>()?)),
        DataType::F16 => Some(Values::F32(
            t.to_vec::<f16>()?.into_iter().map(f32::from).collect(),
        )),
        DataType::I64 => ints(t.to_vec::<i64>()?),
        DataType::I32 => ints(t.to_vec::<i32>()?.into_iter().map(i64::from).collect()),
        DataType::I16 => ints(t.to_vec::<i16>()?.into_iter().map(i64::from).collect()),
        DataType::I8 => ints(t.to_vec::<i8>()?.into_iter().map(i64::from).collect()),
        DataType::U8 => ints(t.to_vec::<u8>()?.into_iter().map(i64::from).collect()),
        DataType::U16 => ints(t.to_vec::<u16>()?.into_iter().map(i64::from).collect()),
        DataType::U32 => ints(t.to_vec::<u32>()?.into_iter().map(i64::from).collect()),
        DataType::U64 => ints(
            t.to_vec::<u64>()?
                .into_iter()
                .map(|x| i64::try_from(x).unwrap_or(i64::MAX))
                .collect(),
        ),
        DataType::Bool => ints(t.to_vec::<bool>()?.into_iter().map(i64::from).collect()),
        DataType::Bytes => Some(Values::Str(
            t.byte_strings()?
                .into_iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect(),
        )),
    }
}
