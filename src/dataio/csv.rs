//! CSV with a header line, read record by record (the `csv` crate), written with quoting as
//! needed. Records shorter or longer than the header, cells that are not numbers in a number
//! column and invalid UTF-8 are row errors with the record's line.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use super::{
    check_unique, corrupt, infer_text_kinds, io_err, Batch, Builder, Column, DataError, Kind,
    RowError, Sink, Source, Values,
};

/// The longest line read: the csv crate buffers a whole record, so a file with no newline must
/// not grow it without bound.
const MAX_LINE: u64 = super::jsonl::MAX_LINE;

/// Fails the read when a line passes [`MAX_LINE`] bytes.
struct LineLimit<R> {
    inner: R,
    since_newline: u64,
    line: u64,
}

impl<R: Read> Read for LineLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut rest = &buf[..n];
        while let Some(i) = memchr::memchr(b'\n', rest) {
            self.since_newline = 0;
            self.line += 1;
            rest = &rest[i + 1..];
        }
        self.since_newline += rest.len() as u64;
        if self.since_newline > MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {}: longer than {} MiB", self.line, MAX_LINE >> 20),
            ));
        }
        Ok(n)
    }
}

pub(crate) struct CsvSource {
    path: PathBuf,
    reader: csv::Reader<LineLimit<BufReader<File>>>,
    names: Vec<String>,
    /// Decided at the first batch.
    kinds: Option<Vec<Kind>>,
    next_row: u64,
    len: u64,
}

fn csv_error(path: &Path, e: csv::Error) -> DataError {
    match e.into_kind() {
        csv::ErrorKind::Io(source) => DataError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => corrupt(path, format!("{other:?}")),
    }
}

impl CsvSource {
    pub(crate) fn open(path: &Path) -> Result<CsvSource, DataError> {
        let file = File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(LineLimit {
                inner: BufReader::with_capacity(1 << 16, file),
                since_newline: 0,
                line: 1,
            });
        let names: Vec<String> = match reader.headers() {
            Ok(h) => h.iter().map(|s| s.trim().to_owned()).collect(),
            Err(e) => {
                if let csv::ErrorKind::Utf8 { .. } = e.kind() {
                    return Err(corrupt(path, "line 1: the header is not UTF-8"));
                }
                return Err(csv_error(path, e));
            }
        };
        if names.is_empty() || names.iter().all(|n| n.is_empty()) {
            return Err(corrupt(path, "empty file: no header line"));
        }
        check_unique(path, &names)?;
        Ok(CsvSource {
            path: path.to_path_buf(),
            reader,
            names,
            kinds: None,
            next_row: 1,
            len,
        })
    }
}

impl Source for CsvSource {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn fraction(&self) -> Option<f64> {
        (self.len > 0).then(|| self.reader.position().byte() as f64 / self.len as f64)
    }

    fn next_batch(
        &mut self,
        rows: usize,
        kinds: &[Option<Kind>],
    ) -> Result<Option<Batch>, DataError> {
        let first_row = self.next_row;
        let mut records = Vec::with_capacity(rows.min(1 << 16));
        let mut errors = Vec::new();
        let width = self.names.len();
        while records.len() < rows {
            let mut record = csv::StringRecord::new();
            let row = self.next_row;
            match self.reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {
                    let line = record.position().map(|p| p.line());
                    if record.len() != width {
                        errors.push(RowError {
                            row,
                            line,
                            message: format!(
                                "{} fields, the header has {width}{}",
                                record.len(),
                                if record.len() < width {
                                    " (a truncated record?)"
                                } else {
                                    ""
                                }
                            ),
                        });
                    }
                    records.push((line, record));
                }
                Err(e) => {
                    let line = e.position().map(|p| p.line());
                    match e.kind() {
                        csv::ErrorKind::Utf8 { .. } => {
                            errors.push(RowError {
                                row,
                                line,
                                message: "not UTF-8".into(),
                            });
                            records.push((line, csv::StringRecord::new()));
                        }
                        _ => return Err(csv_error(&self.path, e)),
                    }
                }
            }
            self.next_row += 1;
        }
        if records.is_empty() {
            return Ok(None);
        }
        let resolved =
            self.kinds.get_or_insert_with(|| {
                infer_text_kinds(kinds, |i| {
                    super::mostly_numbers(records.iter().filter_map(|(_, r)| r.get(i)).map(|c| {
                        (!c.trim().is_empty()).then(|| Builder::parse_number(c).is_some())
                    }))
                })
            });
        // Kinds set after the first batch still count.
        for (r, k) in resolved.iter_mut().zip(kinds) {
            if let Some(k) = k {
                *r = *k;
            }
        }
        let mut columns = Vec::new();
        for (i, kind) in resolved.iter().enumerate() {
            let mut builder = match kind {
                Kind::Skip => continue,
                Kind::Number => Builder::Num(Vec::with_capacity(records.len())),
                Kind::Text => Builder::Text(Vec::with_capacity(records.len())),
            };
            for (n, (line, record)) in records.iter().enumerate() {
                let cell = record.get(i);
                match &mut builder {
                    Builder::Num(v) => match cell.map(Builder::parse_number) {
                        Some(Some(x)) => v.push(x),
                        Some(None) => {
                            v.push(f64::NAN);
                            errors.push(RowError {
                                row: first_row + n as u64,
                                line: *line,
                                message: format!(
                                    "column {:?}: {:?} is not a number",
                                    self.names[i],
                                    cell.unwrap_or_default()
                                ),
                            });
                        }
                        // Counted already: the record is short.
                        None => v.push(f64::NAN),
                    },
                    Builder::Text(v) => v.push(cell.unwrap_or_default().to_owned()),
                }
            }
            columns.push(Column {
                name: self.names[i].clone(),
                values: builder.into_values(),
            });
        }
        errors.sort_by_key(|e| e.row);
        Ok(Some(Batch {
            first_row,
            rows: records.len(),
            columns,
            errors,
        }))
    }
}

pub(crate) struct CsvSink {
    path: PathBuf,
    writer: csv::Writer<BufWriter<File>>,
    record: Vec<String>,
}

impl CsvSink {
    pub(crate) fn create(path: &Path, names: &[String]) -> Result<CsvSink, DataError> {
        let file = File::create(path).map_err(io_err(path))?;
        let mut writer = csv::Writer::from_writer(BufWriter::with_capacity(1 << 16, file));
        writer.write_record(names).map_err(|e| csv_error(path, e))?;
        Ok(CsvSink {
            path: path.to_path_buf(),
            writer,
            record: Vec::new(),
        })
    }
}

/// Shortest text that reads back to the same value (Rust's float `Display`).
pub(crate) fn cell(values: &Values, i: usize, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    let _ = match values {
        Values::F64(v) => write!(out, "{}", v[i]),
        Values::F32(v) => write!(out, "{}", v[i]),
        Values::I64(v) => write!(out, "{}", v[i]),
        Values::Str(v) => {
            out.push_str(&v[i]);
            Ok(())
        }
    };
}

impl Sink for CsvSink {
    fn write(&mut self, columns: &[Column]) -> Result<(), DataError> {
        let rows = columns.first().map_or(0, |c| c.values.len());
        self.record.resize(columns.len(), String::new());
        for i in 0..rows {
            for (c, out) in columns.iter().zip(self.record.iter_mut()) {
                cell(&c.values, i, out);
            }
            self.writer
                .write_record(&self.record)
                .map_err(|e| csv_error(&self.path, e))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), DataError> {
        self.writer.flush().map_err(io_err(&self.path))
    }
}
