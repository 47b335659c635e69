//! Tabular files read and written in a stream of row batches: CSV (with a header), Parquet,
//! JSON Lines and `.npy`, the format chosen by the file's extension. Shared by `ferroserve
//! predict` and any other command that reads datasets (`profile`): nothing here knows models.
//!
//! Reading: [`Reader::open`] reads the header (the column names) only; [`Reader::set_kind`]
//! says how a column is wanted (a number, text, or skipped); [`Reader::next_batch`] returns at
//! most the requested number of rows as named [`Column`]s. Memory stays bounded by the batch,
//! whatever the file's size. A row that cannot be read as asked (a non-numeric value, a short
//! CSV record, a JSON line that is not an object) does not end the read: it is listed in
//! [`Batch::errors`] with its row and line number, and its cells hold a placeholder (NaN, "") so
//! the columns stay aligned. The caller decides to skip the row or to stop. Errors that make
//! the rest of the file unreadable (truncated Parquet, a bad `.npy` header) are
//! [`DataError`]s.
//!
//! Columns not given a kind are read as the file types them: CSV and JSONL columns whose first
//! batch holds mostly numbers (more than half of its non-empty cells; or only empty cells) are
//! numbers ([`Values::F64`]), their other cells row errors; the rest are text;
//! Parquet and `.npy` keep their stored type (F32, F64, integers as I64, strings).
//!
//! Writing: [`Writer::create`] with the output column names; [`Writer::write`] appends a batch
//! (columns in that order); [`Writer::finish`] flushes and closes (the `.npy` header gets its
//! final row count).

mod csv;
mod jsonl;
mod npy;
mod parquet;
mod writer;

pub(crate) use writer::Sink;
pub use writer::Writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The file formats, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
    Jsonl,
    Npy,
}

impl Format {
    /// The format of a path by its extension: `.csv`, `.parquet`/`.pq`, `.jsonl`/`.ndjson`, `.npy`.
    pub fn of(path: &Path) -> Result<Format, DataError> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("csv") => Ok(Format::Csv),
            Some("parquet" | "pq") => Ok(Format::Parquet),
            Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
            Some("npy") => Ok(Format::Npy),
            _ => Err(DataError::Format(format!(
                "{}: unknown file format (extensions: .csv, .parquet, .jsonl, .npy)",
                path.display()
            ))),
        }
    }

    /// Text formats hold no types: a cell read as text keeps its exact spelling.
    pub fn is_text(self) -> bool {
        matches!(self, Format::Csv | Format::Jsonl)
    }
}

/// How a column is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A number per row ([`Values::F64`] from text formats; typed formats keep their type);
    /// a cell that is not one is a row error. Empty cells and nulls read as NaN.
    Number,
    /// Text per row ([`Values::Str`]): text formats keep the cell as written, numbers of typed
    /// formats are printed.
    Text,
    /// Not read at all (absent from the batches).
    Skip,
}

/// A column's values, one per row.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F64(Vec<f64>),
    F32(Vec<f32>),
    I64(Vec<i64>),
    Str(Vec<String>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::F64(v) => v.len(),
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i` as a number (`None` for text).
    pub fn f64_at(&self, i: usize) -> Option<f64> {
        match self {
            Values::F64(v) => v.get(i).copied(),
            Values::F32(v) => v.get(i).map(|&x| f64::from(x)),
            Values::I64(v) => v.get(i).map(|&x| x as f64),
            Values::Str(_) => None,
        }
    }

    /// Keeps the rows whose `keep` is true.
    pub fn retain_rows(&mut self, keep: &[bool]) {
        fn go<T>(v: &mut Vec<T>, keep: &[bool]) {
            let mut i = 0;
            v.retain(|_| {
                i += 1;
                keep.get(i - 1).copied().unwrap_or(true)
            });
        }
        match self {
            Values::F64(v) => go(v, keep),
            Values::F32(v) => go(v, keep),
            Values::I64(v) => go(v, keep),
            Values::Str(v) => go(v, keep),
        }
    }
}

/// A named column of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub values: Values,
}

/// A row that could not be read as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 1-based data row (the header is not a row).
    pub row: u64,
    /// 1-based line of the file where the format has lines (CSV, JSONL).
    pub line: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "row {} (line {line}): {}", self.row, self.message),
            None => write!(f, "row {}: {}", self.row, self.message),
        }
    }
}

/// Consecutive rows of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The 1-based row number of the batch's first row.
    pub first_row: u64,
    pub rows: usize,
    /// The columns read (those not skipped), in file order.
    pub columns: Vec<Column>,
    /// Rows that could not be read as asked, in row order (a row may appear more than once).
    pub errors: Vec<RowError>,
}

impl Batch {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Drops the rows with errors; returns how many went.
    pub fn drop_bad_rows(&mut self) -> usize {
        let mut keep = vec![true; self.rows];
        for e in &self.errors {
            if let Some(k) = e
                .row
                .checked_sub(self.first_row)
                .and_then(|i| keep.get_mut(i as usize))
            {
                *k = false;
            }
        }
        let dropped = keep.iter().filter(|k| !**k).count();
        for c in &mut self.columns {
            c.values.retain_rows(&keep);
        }
        self.rows -= dropped;
        self.errors.clear();
        dropped
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    Format(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file cannot be read on from here (the row where it broke, when known).
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn corrupt(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Corrupt {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// What each format's reader does.
pub(crate) trait Source {
    fn names(&self) -> &[String];
    /// At most `rows` rows of the columns `kinds` does not skip (`kinds[i]`: column i; `None`:
    /// as the file types it). `Ok(None)` at the end.
    fn next_batch(
        &mut self,
        rows: usize,
        kinds: &[Option<Kind>],
    ) -> Result<Option<Batch>, DataError>;
    /// How much of the file has been read, 0 to 1, when known.
    fn fraction(&self) -> Option<f64>;
}

/// A file read in batches.
pub struct Reader {
    format: Format,
    source: Box<dyn Source + Send>,
    kinds: Vec<Option<Kind>>,
}

impl Reader {
    /// Opens a file and reads its header (column names); no rows are read yet.
    pub fn open(path: &Path) -> Result<Reader, DataError> {
        let format = Format::of(path)?;
        let source: Box<dyn Source + Send> = match format {
            Format::Csv => Box::new(csv::CsvSource::open(path)?),
            Format::Jsonl => Box::new(jsonl::JsonlSource::open(path)?),
            Format::Npy => Box::new(npy::NpySource::open(path)?),
            Format::Parquet => Box::new(parquet::ParquetSource::open(path)?),
        };
        let kinds = vec![None; source.names().len()];
        Ok(Reader {
            format,
            source,
            kinds,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The column names, in file order (`.npy`: "0", "1", ... for the columns of a 2-D array).
    pub fn columns(&self) -> &[String] {
        self.source.names()
    }

    /// Says how a column is wanted; `false` when there is no such column.
    pub fn set_kind(&mut self, name: &str, kind: Kind) -> bool {
        match self.source.names().iter().position(|n| n == name) {
            Some(i) => {
                self.kinds[i] = Some(kind);
                true
            }
            None => false,
        }
    }

    /// How much of the file has been read, 0 to 1 (by bytes for CSV and JSONL, by rows for
    /// Parquet and `.npy`).
    pub fn fraction(&self) -> Option<f64> {
        self.source.fraction()
    }

    /// The next at most `rows` rows (at least 1 is asked for); `Ok(None)` at the end.
    pub fn next_batch(&mut self, rows: usize) -> Result<Option<Batch>, DataError> {
        self.source.next_batch(rows.max(1), &self.kinds)
    }
}

/// Builds one column of a text format from cells, per the kind asked or inferred.
pub(crate) enum Builder {
    Num(Vec<f64>),
    Text(Vec<String>),
}

impl Builder {
    /// A number from a cell: empty is missing (NaN).
    pub(crate) fn parse_number(cell: &str) -> Option<f64> {
        let t = cell.trim();
        if t.is_empty() {
            return Some(f64::NAN);
        }
        t.parse::<f64>().ok()
    }

    pub(crate) fn into_values(self) -> Values {
        match self {
            Builder::Num(v) => Values::F64(v),
            Builder::Text(v) => Values::Str(v),
        }
    }
}

/// The kind of each text column from a first batch of cells: numbers if all parse.
pub(crate) fn infer_text_kinds(
    kinds: &[Option<Kind>],
    is_number: impl Fn(usize) -> bool,
) -> Vec<Kind> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, k)| match k {
            Some(k) => *k,
            None if is_number(i) => Kind::Number,
            None => Kind::Text,
        })
        .collect()
}

/// Numbers printed as text (shortest round-trip digits).
pub(crate) fn to_text(values: &Values) -> Values {
    match values {
        Values::F64(v) => Values::Str(v.iter().map(|x| x.to_string()).collect()),
        Values::F32(v) => Values::Str(v.iter().map(|x| x.to_string()).collect()),
        Values::I64(v) => Values::Str(v.iter().map(|x| x.to_string()).collect()),
        Values::Str(v) => Values::Str(v.clone()),
    }
}

/// Whether a text column is numbers, from its first batch's cells (`None`: empty, `Some(ok)`:
/// parsed as a number or not): more than half of the non-empty cells are, or all are empty. A
/// stray bad cell then is a row error of a number column, not a column turned to text.
pub(crate) fn mostly_numbers(cells: impl Iterator<Item = Option<bool>>) -> bool {
    let (mut numbers, mut filled) = (0usize, 0usize);
    for c in cells.flatten() {
        filled += 1;
        numbers += usize::from(c);
    }
    filled == 0 || numbers * 2 > filled
}

/// Column names must be unique to be mapped by name.
pub(crate) fn check_unique(path: &Path, names: &[String]) -> Result<(), DataError> {
    let mut seen = HashMap::new();
    for (i, n) in names.iter().enumerate() {
        if let Some(j) = seen.insert(n.as_str(), i) {
            return Err(corrupt(
                path,
                format!(
                    "column {n:?} appears twice (columns {} and {})",
                    j + 1,
                    i + 1
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
