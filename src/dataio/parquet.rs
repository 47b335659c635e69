//! Parquet through the `parquet` crate's row API (no Arrow): top-level primitive columns, row
//! groups read page by page, so memory follows the batch and the pages, not the file. Snappy is
//! the codec built in (pandas' and pyarrow's default); a file with another codec is refused by
//! the crate with its name. Written with one row group per [`ROW_GROUP`] rows, snappy.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{Compression, ConvertedType, Repetition, Type as Physical};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, FloatType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::file::writer::SerializedFileWriter;
use parquet::record::reader::RowIter;
use parquet::record::{Field, Row};
use parquet::schema::types::{Type, TypePtr};

use super::{corrupt, io_err, Batch, Column, DataError, Kind, RowError, Sink, Source, Values};

/// Rows per written row group.
const ROW_GROUP: usize = 1 << 16;

pub(crate) struct ParquetSource {
    path: PathBuf,
    names: Vec<String>,
    fields: Vec<TypePtr>,
    reader: Option<Arc<SerializedFileReader<File>>>,
    rows: Option<RowIter<'static>>,
    /// Per column read: its index and the values it becomes.
    plan: Vec<(usize, Target)>,
    next_row: u64,
    total: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    F32,
    F64,
    I64,
    Str,
}

impl ParquetSource {
    pub(crate) fn open(path: &Path) -> Result<ParquetSource, DataError> {
        let file = File::open(path).map_err(io_err(path))?;
        let reader = SerializedFileReader::new(file)
            .map_err(|e| corrupt(path, format!("not a readable Parquet file: {e}")))?;
        let root = reader.metadata().file_metadata().schema();
        let fields = root.get_fields().to_vec();
        if let Some(f) = fields.iter().find(|f| !f.is_primitive()) {
            return Err(corrupt(
                path,
                format!("column {:?} is nested: flat columns are read", f.name()),
            ));
        }
        let names = fields.iter().map(|f| f.name().to_owned()).collect();
        let total = u64::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0);
        Ok(ParquetSource {
            path: path.to_path_buf(),
            names,
            fields,
            reader: Some(Arc::new(reader)),
            rows: None,
            plan: Vec::new(),
            next_row: 1,
            total,
        })
    }

    /// The projection of the columns not skipped, on the first batch.
    fn start(&mut self, kinds: &[Option<Kind>]) -> Result<(), DataError> {
        let Some(reader) = self.reader.take() else {
            return Ok(());
        };
        let mut projected = Vec::new();
        for (i, f) in self.fields.iter().enumerate() {
            let kind = kinds.get(i).copied().flatten();
            let native = match f.get_physical_type() {
                Physical::FLOAT => Target::F32,
                Physical::DOUBLE => Target::F64,
                Physical::INT32 | Physical::INT64 | Physical::BOOLEAN => Target::I64,
                _ => Target::Str,
            };
            let target = match (kind, native) {
                (Some(Kind::Skip), _) => continue,
                (Some(Kind::Text), _) => Target::Str,
                (Some(Kind::Number), Target::Str) => Target::F64,
                (_, native) => native,
            };
            projected.push(f.clone());
            self.plan.push((i, target));
        }
        let projection = Type::group_type_builder("schema")
            .with_fields(projected)
            .build()
            .map_err(|e| corrupt(&self.path, e.to_string()))?;
        let iter = RowIter::from_file_into(Box::new(ArcReader(reader)))
            .project(Some(projection))
            .map_err(|e| corrupt(&self.path, e.to_string()))?;
        self.rows = Some(iter);
        Ok(())
    }
}

/// `RowIter::from_file_into` takes a boxed reader it owns.
struct ArcReader(Arc<SerializedFileReader<File>>);

impl FileReader for ArcReader {
    fn metadata(&self) -> &parquet::file::metadata::ParquetMetaData {
        self.0.metadata()
    }
    fn num_row_groups(&self) -> usize {
        self.0.num_row_groups()
    }
    fn get_row_group(
        &self,
        i: usize,
    ) -> parquet::errors::Result<Box<dyn parquet::file::reader::RowGroupReader + '_>> {
        self.0.get_row_group(i)
    }
    fn get_row_iter(&self, projection: Option<Type>) -> parquet::errors::Result<RowIter<'_>> {
        self.0.get_row_iter(projection)
    }
}

fn number(field: &Field) -> Option<f64> {
    Some(match field {
        Field::Null => f64::NAN,
        Field::Bool(b) => f64::from(u8::from(*b)),
        Field::Byte(x) => f64::from(*x),
        Field::Short(x) => f64::from(*x),
        Field::Int(x) => f64::from(*x),
        Field::Long(x) => *x as f64,
        Field::UByte(x) => f64::from(*x),
        Field::UShort(x) => f64::from(*x),
        Field::UInt(x) => f64::from(*x),
        Field::ULong(x) => *x as f64,
        Field::Float16(x) => f64::from(*x),
        Field::Float(x) => f64::from(*x),
        Field::Double(x) => *x,
        Field::Str(s) => return super::Builder::parse_number(s),
        _ => return None,
    })
}

fn text(field: &Field) -> String {
    match field {
        Field::Null => String::new(),
        Field::Str(s) => s.clone(),
        Field::Float(x) => x.to_string(),
        Field::Double(x) => x.to_string(),
        other => other.to_string(),
    }
}

fn push(values: &mut Values, field: &Field) -> Result<(), String> {
    match values {
        Values::F32(v) => v.push(match field {
            Field::Float(x) => *x,
            Field::Null => f32::NAN,
            other => number(other).ok_or("not a number")? as f32,
        }),
        Values::F64(v) => v.push(number(field).ok_or("not a number")?),
        Values::I64(v) => {
            let x = match field {
                Field::Null => Err("null in an integer column".to_string()),
                Field::Bool(b) => Ok(i64::from(*b)),
                Field::Byte(x) => Ok(i64::from(*x)),
                Field::Short(x) => Ok(i64::from(*x)),
                Field::Int(x) => Ok(i64::from(*x)),
                Field::Long(x) => Ok(*x),
                Field::UByte(x) => Ok(i64::from(*x)),
                Field::UShort(x) => Ok(i64::from(*x)),
                Field::UInt(x) => Ok(i64::from(*x)),
                Field::ULong(x) => i64::try_from(*x).map_err(|_| "over i64".to_string()),
                _ => Err("not an integer".to_string()),
            };
            v.push(*x.as_ref().unwrap_or(&0));
            x?;
        }
        Values::Str(v) => v.push(text(field)),
    }
    Ok(())
}

fn placeholder(values: &mut Values, len: usize) {
    match values {
        Values::F32(v) => v.resize(len, f32::NAN),
        Values::F64(v) => v.resize(len, f64::NAN),
        Values::I64(v) => v.resize(len, 0),
        Values::Str(v) => v.resize(len, String::new()),
    }
}

impl Source for ParquetSource {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn fraction(&self) -> Option<f64> {
        (self.total > 0).then(|| (self.next_row - 1) as f64 / self.total as f64)
    }

    fn next_batch(
        &mut self,
        rows: usize,
        kinds: &[Option<Kind>],
    ) -> Result<Option<Batch>, DataError> {
        self.start(kinds)?;
        let Some(iter) = self.rows.as_mut() else {
            return Ok(None);
        };
        let cap = rows.min(1 << 16);
        let mut values: Vec<Values> = self
            .plan
            .iter()
            .map(|(_, t)| match t {
                Target::F32 => Values::F32(Vec::with_capacity(cap)),
                Target::F64 => Values::F64(Vec::with_capacity(cap)),
                Target::I64 => Values::I64(Vec::with_capacity(cap)),
                Target::Str => Values::Str(Vec::with_capacity(cap)),
            })
            .collect();
        let first_row = self.next_row;
        let mut errors = Vec::new();
        let mut n = 0;
        while n < rows {
            let row: Row = match iter.next() {
                None => break,
                Some(Ok(row)) => row,
                Some(Err(e)) => {
                    return Err(corrupt(
                        &self.path,
                        format!("unreadable from row {}: {e}", self.next_row),
                    ))
                }
            };
            for ((_, field), (v, (i, _))) in
                row.get_column_iter().zip(values.iter_mut().zip(&self.plan))
            {
                if let Err(message) = push(v, field) {
                    placeholder(v, n + 1);
                    errors.push(RowError {
                        row: self.next_row,
                        line: None,
                        message: format!("column {:?}: {message}", self.names[*i]),
                    });
                }
            }
            n += 1;
            self.next_row += 1;
        }
        if n == 0 {
            return Ok(None);
        }
        let columns = values
            .into_iter()
            .zip(&self.plan)
            .map(|(values, (i, _))| Column {
                name: self.names[*i].clone(),
                values,
            })
            .collect();
        Ok(Some(Batch {
            first_row,
            rows: n,
            columns,
            errors,
        }))
    }
}

pub(crate) struct ParquetSink {
    path: PathBuf,
    names: Vec<String>,
    writer: Option<SerializedFileWriter<File>>,
    file: Option<File>,
    buffered: Vec<Column>,
}

impl ParquetSink {
    pub(crate) fn create(path: &Path, names: &[String]) -> Result<ParquetSink, DataError> {
        let file = File::create(path).map_err(io_err(path))?;
        Ok(ParquetSink {
            path: path.to_path_buf(),
            names: names.to_vec(),
            writer: None,
            file: Some(file),
            buffered: Vec::new(),
        })
    }

    fn err(&self, e: parquet::errors::ParquetError) -> DataError {
        corrupt(&self.path, format!("writing Parquet: {e}"))
    }

    /// The file's schema from the first batch's column types.
    fn open_writer(&mut self, columns: &[Values]) -> Result<(), DataError> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let mut fields = Vec::new();
        for (name, v) in self.names.iter().zip(columns) {
            let (physical, utf8) = match v {
                Values::F32(_) => (Physical::FLOAT, false),
                Values::F64(_) => (Physical::DOUBLE, false),
                Values::I64(_) => (Physical::INT64, false),
                Values::Str(_) => (Physical::BYTE_ARRAY, true),
            };
            let mut b =
                Type::primitive_type_builder(name, physical).with_repetition(Repetition::REQUIRED);
            if utf8 {
                b = b.with_converted_type(ConvertedType::UTF8);
            }
            fields.push(Arc::new(b.build().map_err(|e| self.err(e))?));
        }
        let schema = Type::group_type_builder("schema")
            .with_fields(fields)
            .build()
            .map_err(|e| self.err(e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let writer = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props))
            .map_err(|e| self.err(e))?;
        self.writer = Some(writer);
        Ok(())
    }

    fn flush_group(&mut self) -> Result<(), DataError> {
        if self.buffered.first().is_none_or(|c| c.values.is_empty()) {
            return Ok(());
        }
        let columns = std::mem::take(&mut self.buffered);
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let path = self.path.clone();
        let err =
            |e: parquet::errors::ParquetError| corrupt(&path, format!("writing Parquet: {e}"));
        let mut group = writer.next_row_group().map_err(err)?;
        for c in &columns {
            let Some(mut col) = group.next_column().map_err(err)? else {
                break;
            };
            match &c.values {
                Values::F32(v) => col.typed::<FloatType>().write_batch(v, None, None),
                Values::F64(v) => col.typed::<DoubleType>().write_batch(v, None, None),
                Values::I64(v) => col.typed::<Int64Type>().write_batch(v, None, None),
                Values::Str(v) => {
                    let b: Vec<ByteArray> = v.iter().map(|s| ByteArray::from(s.as_str())).collect();
                    col.typed::<ByteArrayType>().write_batch(&b, None, None)
                }
            }
            .map_err(err)?;
            col.close().map_err(err)?;
        }
        group.close().map_err(err)?;
        Ok(())
    }
}

fn append(into: &mut Values, from: &Values) -> Result<(), String> {
    match (into, from) {
        (Values::F32(a), Values::F32(b)) => a.extend_from_slice(b),
        (Values::F64(a), Values::F64(b)) => a.extend_from_slice(b),
        (Values::I64(a), Values::I64(b)) => a.extend_from_slice(b),
        (Values::Str(a), Values::Str(b)) => a.extend_from_slice(b),
        _ => return Err("a column changed type between batches".into()),
    }
    Ok(())
}

impl Sink for ParquetSink {
    fn write(&mut self, columns: &[Column]) -> Result<(), DataError> {
        if self.writer.is_none() {
            let values: Vec<Values> = columns.iter().map(|c| c.values.clone()).collect();
            self.open_writer(&values)?;
        }
        if self.buffered.is_empty() {
            self.buffered = columns.to_vec();
        } else {
            for (into, from) in self.buffered.iter_mut().zip(columns) {
                append(&mut into.values, &from.values).map_err(|e| corrupt(&self.path, e))?;
            }
        }
        if self.buffered.first().map_or(0, |c| c.values.len()) >= ROW_GROUP {
            self.flush_group()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), DataError> {
        if self.writer.is_none() {
            // No rows: the columns as doubles.
            let values = vec![Values::F64(Vec::new()); self.names.len()];
            self.open_writer(&values)?;
        }
        self.flush_group()?;
        if let Some(writer) = self.writer.take() {
            writer.close().map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}
