//! [`Writer`]: a file written in batches, the format by the path's extension.

use std::path::Path;

use super::{csv, jsonl, npy, parquet, Column, DataError, Format};

/// What each format's writer does.
pub(crate) trait Sink {
    fn write(&mut self, columns: &[Column]) -> Result<(), DataError>;
    fn finish(&mut self) -> Result<(), DataError>;
}

/// A file written in batches.
pub struct Writer {
    names: Vec<String>,
    sink: Box<dyn Sink + Send>,
    rows: u64,
}

impl Writer {
    /// Creates (or truncates) `path`, the format by its extension.
    pub fn create(path: &Path, names: Vec<String>) -> Result<Writer, DataError> {
        let sink: Box<dyn Sink + Send> = match Format::of(path)? {
            Format::Csv => Box::new(csv::CsvSink::create(path, &names)?),
            Format::Jsonl => Box::new(jsonl::JsonlSink::create(path, &names)?),
            Format::Npy => Box::new(npy::NpySink::create(path, names.len())?),
            Format::Parquet => Box::new(parquet::ParquetSink::create(path, &names)?),
        };
        Ok(Writer {
            names,
            sink,
            rows: 0,
        })
    }

    /// Appends rows: one column per name given at creation, in that order, of equal length.
    pub fn write(&mut self, columns: &[Column]) -> Result<(), DataError> {
        if columns.len() != self.names.len()
            || columns.iter().zip(&self.names).any(|(c, n)| &c.name != n)
        {
            return Err(DataError::Format(
                "a batch's columns differ from the writer's".into(),
            ));
        }
        let rows = columns.first().map_or(0, |c| c.values.len());
        if columns.iter().any(|c| c.values.len() != rows) {
            return Err(DataError::Format("columns of unequal length".into()));
        }
        if rows == 0 {
            return Ok(());
        }
        self.sink.write(columns)?;
        self.rows += rows as u64;
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes everything and closes the file.
    pub fn finish(mut self) -> Result<u64, DataError> {
        self.sink.finish()?;
        Ok(self.rows)
    }
}
