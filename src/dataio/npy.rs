//! NumPy `.npy` files (format versions 1 to 3): a 1-D array is one column, a 2-D C-order array
//! one column per index of its second dimension (named "0", "1", ...). Little-endian f4, f8,
//! i4 and i8 are read. Written as one 2-D array: f4 or i8 when every column has that type,
//! else f8; the shape in the header is patched with the final row count at the end.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{corrupt, io_err, Batch, Column, DataError, Kind, Sink, Source, Values};

/// The header, as this module writes it, padded to this many bytes (magic included).
const HEADER_LEN: usize = 128;
/// The longest header read.
const MAX_HEADER: usize = 1 << 16;

#[derive(Clone, Copy, PartialEq)]
enum Elem {
    F4,
    F8,
    I4,
    I8,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::F4 | Elem::I4 => 4,
            Elem::F8 | Elem::I8 => 8,
        }
    }
}

pub(crate) struct NpySource {
    path: PathBuf,
    reader: BufReader<File>,
    names: Vec<String>,
    elem: Elem,
    rows: u64,
    next_row: u64,
}

/// The value of `'key':` in a header dict, up to the next top-level comma.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

fn parse_header(header: &str) -> Result<(Elem, Vec<u64>), String> {
    let descr = field(header, "descr").ok_or("no 'descr' in the header")?;
    let elem = match descr.trim_matches(['\'', '"']) {
        "<f4" => Elem::F4,
        "<f8" => Elem::F8,
        "<i4" => Elem::I4,
        "<i8" => Elem::I8,
        other => {
            return Err(format!(
                "dtype {other:?} is not read (little-endian f4, f8, i4, i8 are)"
            ))
        }
    };
    if field(header, "fortran_order") != Some("False") {
        return Err("only C-order arrays are read (fortran_order is not False)".into());
    }
    let shape = field(header, "shape").ok_or("no 'shape' in the header")?;
    let dims = shape
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<u64>().map_err(|_| format!("bad shape {shape}")))
        .collect::<Result<Vec<_>, _>>()?;
    if dims.is_empty() || dims.len() > 2 {
        return Err(format!(
            "shape {shape}: a 1-D or 2-D array is read (rows, columns)"
        ));
    }
    Ok((elem, dims))
}

impl NpySource {
    pub(crate) fn open(path: &Path) -> Result<NpySource, DataError> {
        let file = File::open(path).map_err(io_err(path))?;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut magic = [0u8; 8];
        reader
            .read_exact(&mut magic)
            .map_err(|_| corrupt(path, "empty or truncated file: no .npy header"))?;
        if &magic[..6] != b"\x93NUMPY" {
            return Err(corrupt(path, "not a .npy file (no \\x93NUMPY magic)"));
        }
        let len = if magic[6] == 1 {
            let mut b = [0u8; 2];
            reader.read_exact(&mut b).map_err(io_err(path))?;
            usize::from(u16::from_le_bytes(b))
        } else {
            let mut b = [0u8; 4];
            reader.read_exact(&mut b).map_err(io_err(path))?;
            u32::from_le_bytes(b) as usize
        };
        if len > MAX_HEADER {
            return Err(corrupt(path, format!("a header of {len} bytes")));
        }
        let mut header = vec![0u8; len];
        reader
            .read_exact(&mut header)
            .map_err(|_| corrupt(path, "truncated header"))?;
        let header = String::from_utf8_lossy(&header);
        let (elem, dims) = parse_header(&header).map_err(|e| corrupt(path, e))?;
        let cols = dims.get(1).copied().unwrap_or(1);
        if cols == 0 || cols > 1 << 16 {
            return Err(corrupt(path, format!("{cols} columns")));
        }
        Ok(NpySource {
            path: path.to_path_buf(),
            reader,
            names: (0..cols).map(|c| c.to_string()).collect(),
            elem,
            rows: dims[0],
            next_row: 1,
        })
    }
}

impl Source for NpySource {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn fraction(&self) -> Option<f64> {
        (self.rows > 0).then(|| (self.next_row - 1) as f64 / self.rows as f64)
    }

    fn next_batch(
        &mut self,
        rows: usize,
        kinds: &[Option<Kind>],
    ) -> Result<Option<Batch>, DataError> {
        let left = self.rows - (self.next_row - 1);
        let n = left.min(rows as u64) as usize;
        if n == 0 {
            return Ok(None);
        }
        let width = self.names.len();
        let size = self.elem.size();
        let bytes = n
            .checked_mul(width)
            .and_then(|x| x.checked_mul(size))
            .filter(|&b| b <= 1 << 30)
            .ok_or_else(|| {
                corrupt(
                    &self.path,
                    format!("{n} rows of {width} columns: too large a batch"),
                )
            })?;
        let mut buf = vec![0u8; bytes];
        if self.reader.read_exact(&mut buf).is_err() {
            return Err(corrupt(
                &self.path,
                format!(
                    "truncated: the data ends within rows {}..{} (the header says {} rows)",
                    self.next_row,
                    self.next_row + n as u64 - 1,
                    self.rows
                ),
            ));
        }
        let at = |r: usize, c: usize| &buf[(r * width + c) * size..][..size];
        let mut columns = Vec::new();
        for (c, name) in self.names.iter().enumerate() {
            let kind = kinds.get(c).copied().flatten();
            if kind == Some(Kind::Skip) {
                continue;
            }
            let mut values = match self.elem {
                Elem::F4 => Values::F32(
                    (0..n)
                        .map(|r| f32::from_le_bytes(at(r, c).try_into().unwrap_or_default()))
                        .collect(),
                ),
                Elem::F8 => Values::F64(
                    (0..n)
                        .map(|r| f64::from_le_bytes(at(r, c).try_into().unwrap_or_default()))
                        .collect(),
                ),
                Elem::I4 => Values::I64(
                    (0..n)
                        .map(|r| {
                            i64::from(i32::from_le_bytes(at(r, c).try_into().unwrap_or_default()))
                        })
                        .collect(),
                ),
                Elem::I8 => Values::I64(
                    (0..n)
                        .map(|r| i64::from_le_bytes(at(r, c).try_into().unwrap_or_default()))
                        .collect(),
                ),
            };
            if kind == Some(Kind::Text) {
                values = super::to_text(&values);
            }
            columns.push(Column {
                name: name.clone(),
                values,
            });
        }
        let first_row = self.next_row;
        self.next_row += n as u64;
        Ok(Some(Batch {
            first_row,
            rows: n,
            columns,
            errors: Vec::new(),
        }))
    }
}

pub(crate) struct NpySink {
    path: PathBuf,
    writer: BufWriter<File>,
    elem: Option<Elem>,
    cols: usize,
    rows: u64,
}

fn header(elem: Elem, rows: u64, cols: usize) -> Vec<u8> {
    let descr = match elem {
        Elem::F4 => "<f4",
        Elem::F8 => "<f8",
        Elem::I4 => "<i4",
        Elem::I8 => "<i8",
    };
    let dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend_from_slice(&((HEADER_LEN - 10) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(HEADER_LEN - 1, b' ');
    h.push(b'\n');
    h
}

impl NpySink {
    pub(crate) fn create(path: &Path, cols: usize) -> Result<NpySink, DataError> {
        let file = File::create(path).map_err(io_err(path))?;
        Ok(NpySink {
            path: path.to_path_buf(),
            writer: BufWriter::with_capacity(1 << 16, file),
            elem: None,
            cols,
            rows: 0,
        })
    }
}

impl Sink for NpySink {
    fn write(&mut self, columns: &[Column]) -> Result<(), DataError> {
        let elem = match self.elem {
            Some(e) => e,
            None => {
                if let Some(c) = columns.iter().find(|c| matches!(c.values, Values::Str(_))) {
                    return Err(DataError::Format(format!(
                        ".npy output holds numbers only: column {:?} is text",
                        c.name
                    )));
                }
                let all = |f: fn(&Values) -> bool| columns.iter().all(|c| f(&c.values));
                let e = if all(|v| matches!(v, Values::F32(_))) {
                    Elem::F4
                } else if all(|v| matches!(v, Values::I64(_))) {
                    Elem::I8
                } else {
                    Elem::F8
                };
                self.cols = columns.len();
                self.writer
                    .write_all(&header(e, 0, self.cols))
                    .map_err(io_err(&self.path))?;
                *self.elem.insert(e)
            }
        };
        let rows = columns.first().map_or(0, |c| c.values.len());
        let mut out = Vec::with_capacity(rows * columns.len() * elem.size());
        for i in 0..rows {
            for c in columns {
                match (elem, &c.values) {
                    (Elem::F4, Values::F32(v)) => out.extend_from_slice(&v[i].to_le_bytes()),
                    (Elem::I8, Values::I64(v)) => out.extend_from_slice(&v[i].to_le_bytes()),
                    (_, v) => out.extend_from_slice(
                        &v.f64_at(i)
                            .ok_or_else(|| {
                                DataError::Format(format!(
                                    ".npy output holds numbers only: column {:?} is text",
                                    c.name
                                ))
                            })?
                            .to_le_bytes(),
                    ),
                }
            }
        }
        self.writer.write_all(&out).map_err(io_err(&self.path))?;
        self.rows += rows as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), DataError> {
        let path = self.path.clone();
        let elem = match self.elem {
            Some(e) => e,
            None => {
                self.writer
                    .write_all(&header(Elem::F8, 0, self.cols))
                    .map_err(io_err(&path))?;
                Elem::F8
            }
        };
        self.writer.flush().map_err(io_err(&path))?;
        let file = self.writer.get_mut();
        file.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
        file.write_all(&header(elem, self.rows, self.cols))
            .map_err(io_err(&path))?;
        file.sync_data().map_err(io_err(&path))
    }
}
