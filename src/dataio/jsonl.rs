//! JSON Lines: one object per line, its keys the columns (the first object's keys, in its
//! order, name them). Blank lines are skipped; a line longer than [`MAX_LINE`] ends the read.
//! A line that is not an object, a key missing from a row, or a value that is not a number in a
//! number column is a row error with its line.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::{
    check_unique, corrupt, infer_text_kinds, io_err, Batch, Builder, Column, DataError, Kind,
    RowError, Sink, Source, Values,
};

/// The longest line read (a row of a dataset, not a document).
pub(crate) const MAX_LINE: u64 = 16 << 20;

/// A row as read: its line, and its object (`None`: the line is not an object).
type Row = (u64, Option<BTreeMap<String, Value>>);

pub(crate) struct JsonlSource {
    path: PathBuf,
    reader: BufReader<File>,
    names: Vec<String>,
    kinds: Option<Vec<Kind>>,
    /// The first object, read at open for its keys.
    pending: Option<Row>,
    line: u64,
    next_row: u64,
    buf: Vec<u8>,
    read: u64,
    len: u64,
}

/// An object's keys in the order written.
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}

impl JsonlSource {
    pub(crate) fn open(path: &Path) -> Result<JsonlSource, DataError> {
        let file = File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut source = JsonlSource {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 16, file),
            names: Vec::new(),
            kinds: None,
            pending: None,
            line: 0,
            next_row: 1,
            buf: Vec::new(),
            read: 0,
            len,
        };
        let Some(line) = source.next_line()? else {
            return Err(corrupt(
                path,
                "empty file: no JSON object to name the columns",
            ));
        };
        let keys: Keys = serde_json::from_slice(&source.buf).map_err(|e| {
            corrupt(
                path,
                format!("line {line}: the first line is not a JSON object: {e}"),
            )
        })?;
        if keys.0.is_empty() {
            return Err(corrupt(
                path,
                format!("line {line}: an object with no keys"),
            ));
        }
        check_unique(path, &keys.0)?;
        source.names = keys.0;
        source.pending = Some((line, serde_json::from_slice(&source.buf).ok()));
        Ok(source)
    }

    /// The next non-blank line into `buf`; its number.
    fn next_line(&mut self) -> Result<Option<u64>, DataError> {
        loop {
            self.buf.clear();
            let n = (&mut self.reader)
                .take(MAX_LINE + 1)
                .read_until(b'\n', &mut self.buf)
                .map_err(io_err(&self.path))?;
            if n == 0 {
                return Ok(None);
            }
            self.read += n as u64;
            self.line += 1;
            if self.buf.len() as u64 > MAX_LINE {
                return Err(corrupt(
                    &self.path,
                    format!("line {}: longer than {} MiB", self.line, MAX_LINE >> 20),
                ));
            }
            if !self.buf.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(self.line));
            }
        }
    }
}

fn is_number(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Number(_) | Value::Null))
}

impl Source for JsonlSource {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn fraction(&self) -> Option<f64> {
        (self.len > 0).then(|| self.read as f64 / self.len as f64)
    }

    fn next_batch(
        &mut self,
        rows: usize,
        kinds: &[Option<Kind>],
    ) -> Result<Option<Batch>, DataError> {
        let first_row = self.next_row;
        let mut batch: Vec<Row> = Vec::with_capacity(rows.min(1 << 16));
        let mut errors = Vec::new();
        while batch.len() < rows {
            let row = match self.pending.take() {
                Some(r) => r,
                None => match self.next_line()? {
                    Some(line) => (line, serde_json::from_slice(&self.buf).ok()),
                    None => break,
                },
            };
            if row.1.is_none() {
                errors.push(RowError {
                    row: self.next_row,
                    line: Some(row.0),
                    message: "not a JSON object (truncated or malformed line)".into(),
                });
            }
            batch.push(row);
            self.next_row += 1;
        }
        if batch.is_empty() {
            return Ok(None);
        }
        let names = &self.names;
        let resolved = self.kinds.get_or_insert_with(|| {
            infer_text_kinds(kinds, |i| {
                super::mostly_numbers(batch.iter().filter_map(|(_, o)| o.as_ref()).map(|o| {
                    match o.get(&names[i]) {
                        None | Some(Value::Null) => None,
                        v => Some(is_number(v)),
                    }
                }))
            })
        });
        for (r, k) in resolved.iter_mut().zip(kinds) {
            if let Some(k) = k {
                *r = *k;
            }
        }
        let mut columns = Vec::new();
        for (i, kind) in resolved.iter().enumerate() {
            let name = &self.names[i];
            let mut builder = match kind {
                Kind::Skip => continue,
                Kind::Number => Builder::Num(Vec::with_capacity(batch.len())),
                Kind::Text => Builder::Text(Vec::with_capacity(batch.len())),
            };
            for (n, (line, object)) in batch.iter().enumerate() {
                let Some(object) = object else {
                    match &mut builder {
                        Builder::Num(v) => v.push(f64::NAN),
                        Builder::Text(v) => v.push(String::new()),
                    }
                    continue;
                };
                let value = object.get(name);
                let mut bad = |message: String| {
                    errors.push(RowError {
                        row: first_row + n as u64,
                        line: Some(*line),
                        message,
                    })
                };
                if value.is_none() {
                    bad(format!("no key {name:?}"));
                }
                match &mut builder {
                    Builder::Num(v) => v.push(match value {
                        Some(Value::Number(x)) => x.as_f64().unwrap_or(f64::NAN),
                        Some(Value::Null) | None => f64::NAN,
                        Some(Value::String(s)) => Builder::parse_number(s).unwrap_or_else(|| {
                            bad(format!("key {name:?}: {s:?} is not a number"));
                            f64::NAN
                        }),
                        Some(other) => {
                            bad(format!("key {name:?}: {other} is not a number"));
                            f64::NAN
                        }
                    }),
                    Builder::Text(v) => v.push(match value {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    }),
                }
            }
            columns.push(Column {
                name: name.clone(),
                values: builder.into_values(),
            });
        }
        errors.sort_by_key(|e| e.row);
        Ok(Some(Batch {
            first_row,
            rows: batch.len(),
            columns,
            errors,
        }))
    }
}

pub(crate) struct JsonlSink {
    path: PathBuf,
    writer: BufWriter<File>,
    /// Each name as a JSON string, with its colon.
    keys: Vec<String>,
}

impl JsonlSink {
    pub(crate) fn create(path: &Path, names: &[String]) -> Result<JsonlSink, DataError> {
        let file = File::create(path).map_err(io_err(path))?;
        let keys = names
            .iter()
            .map(|n| format!("{}:", Value::String(n.clone())))
            .collect();
        Ok(JsonlSink {
            path: path.to_path_buf(),
            writer: BufWriter::with_capacity(1 << 16, file),
            keys,
        })
    }
}

/// A float as JSON: shortest round-trip digits, always with a point or exponent (so it reads
/// back as a float); NaN and infinities (not JSON numbers) as null.
fn json_float(line: &mut String, x: f64, text: impl std::fmt::Display) {
    use std::fmt::Write;
    if !x.is_finite() {
        line.push_str("null");
        return;
    }
    let start = line.len();
    let _ = write!(line, "{text}");
    if !line[start..].contains(['.', 'e', 'E']) {
        line.push_str(".0");
    }
}

impl Sink for JsonlSink {
    fn write(&mut self, columns: &[Column]) -> Result<(), DataError> {
        use std::fmt::Write as _;
        let rows = columns.first().map_or(0, |c| c.values.len());
        let mut line = String::new();
        for i in 0..rows {
            line.clear();
            line.push('{');
            for (j, (c, key)) in columns.iter().zip(&self.keys).enumerate() {
                if j > 0 {
                    line.push(',');
                }
                line.push_str(key);
                match &c.values {
                    Values::F64(v) => json_float(&mut line, v[i], v[i]),
                    Values::F32(v) => json_float(&mut line, f64::from(v[i]), v[i]),
                    Values::I64(v) => {
                        let _ = write!(line, "{}", v[i]);
                    }
                    Values::Str(v) => line.push_str(&Value::String(v[i].clone()).to_string()),
                }
            }
            line.push_str("}\n");
            self.writer
                .write_all(line.as_bytes())
                .map_err(io_err(&self.path))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), DataError> {
        self.writer.flush().map_err(io_err(&self.path))
    }
}
