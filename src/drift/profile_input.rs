//! TEMPORARY ADAPTER (to be replaced by the data-file reader module of `ferroserve predict`,
//! issue 21): the training sample `ferroserve profile` reads, as named columns. Only what the
//! profile needs: CSV with a header (comma separated, no quoting) and little-endian C-order
//! `.npy` of f4/f8/i4/i8 (a rank > 2 array is flattened per row, columns named by index).
//! The swap: make `read_columns` call the shared reader and convert its columns.

use std::path::Path;

/// One column of the sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    Numeric(Vec<f64>),
    Text(Vec<String>),
}

/// Files larger than this are refused (the whole sample is read into memory).
const MAX_BYTES: u64 = 1 << 30;

/// The file's columns in order, with their names (CSV header; `.npy`: "0", "1", ...).
pub fn read_columns(path: &Path) -> Result<Vec<(String, Column)>, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if size > MAX_BYTES {
        return Err(format!(
            "{}: {size} bytes, at most {MAX_BYTES}",
            path.display()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let out = if path.extension().is_some_and(|e| e == "npy") {
        npy(&bytes)
    } else {
        csv(&String::from_utf8_lossy(&bytes))
    };
    out.map_err(|e| format!("{}: {e}", path.display()))
}

fn csv(text: &str) -> Result<Vec<(String, Column)>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .ok_or("empty CSV")?
        .split(',')
        .map(|h| h.trim().to_owned())
        .collect();
    let mut cells: Vec<Vec<String>> = vec![Vec::new(); header.len()];
    for (i, line) in lines.enumerate() {
        let row: Vec<&str> = line.split(',').collect();
        if row.len() != header.len() {
            return Err(format!(
                "line {}: {} fields, the header has {}",
                i + 2,
                row.len(),
                header.len()
            ));
        }
        for (c, v) in cells.iter_mut().zip(row) {
            c.push(v.trim().to_owned());
        }
    }
    Ok(header
        .into_iter()
        .zip(cells)
        .map(|(name, c)| {
            let parsed: Option<Vec<f64>> = c.iter().map(|v| v.parse().ok()).collect();
            (name, parsed.map_or(Column::Text(c), Column::Numeric))
        })
        .collect())
}

fn npy(b: &[u8]) -> Result<Vec<(String, Column)>, String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy file".into());
    }
    let (len, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        _ if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        _ => return Err("truncated .npy header".into()),
    };
    let header = std::str::from_utf8(b.get(start..start + len).ok_or("truncated .npy header")?)
        .map_err(|e| e.to_string())?;
    let field = |key: &str| {
        header
            .split(key)
            .nth(1)
            .ok_or_else(|| format!(".npy header has no {key}"))
    };
    if field("'fortran_order':")?.trim_start().starts_with("True") {
        return Err("Fortran-order .npy is not supported".into());
    }
    let descr = field("'descr':")?.trim_start().trim_start_matches('\'');
    let descr = &descr[..descr.find('\'').unwrap_or(0)];
    let shape_text = field("'shape':")?;
    let shape_text = &shape_text
        [shape_text.find('(').ok_or("bad shape")? + 1..shape_text.find(')').ok_or("bad shape")?];
    let shape: Vec<usize> = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().map_err(|_| format!("bad dimension {s:?}")))
        .collect::<Result<_, _>>()?;
    let (size, read): (usize, fn(&[u8]) -> f64) = match descr {
        "<f4" => (4, |x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]) as f64),
        "<f8" => (8, |x| {
            f64::from_le_bytes(x[..8].try_into().unwrap_or([0; 8]))
        }),
        "<i4" => (4, |x| i32::from_le_bytes([x[0], x[1], x[2], x[3]]) as f64),
        "<i8" => (8, |x| {
            i64::from_le_bytes(x[..8].try_into().unwrap_or([0; 8])) as f64
        }),
        d => return Err(format!("dtype {d:?} is not supported (f4, f8, i4, i8)")),
    };
    let rows = shape.first().copied().unwrap_or(1);
    let width: usize = shape.get(1..).map_or(1, |d| d.iter().product());
    let data = &b[start + len..];
    if data.len() != rows.saturating_mul(width).saturating_mul(size) {
        return Err(format!(
            "data holds {} bytes, shape {shape:?} needs {}",
            data.len(),
            rows * width * size
        ));
    }
    let mut cols = vec![Vec::with_capacity(rows); width];
    for (i, chunk) in data.chunks_exact(size).enumerate() {
        cols[i % width].push(read(chunk));
    }
    Ok(cols
        .into_iter()
        .enumerate()
        .map(|(i, c)| (i.to_string(), Column::Numeric(c)))
        .collect())
}
