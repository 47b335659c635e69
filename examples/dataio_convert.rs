//! Converts a tabular file to another format through `ferroserve::dataio`, in a stream of
//! batches (benches/predict.py makes its Parquet input from the CSV with it):
//!
//!     cargo run --release --example dataio_convert -- IN.csv OUT.parquet [ROWS_PER_BATCH]

use std::path::PathBuf;

use ferroserve::dataio::{Reader, Writer};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: dataio_convert IN OUT [ROWS_PER_BATCH]");
    };
    let rows: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(65536);
    let mut reader = Reader::open(&PathBuf::from(input))?;
    let mut writer: Option<Writer> = None;
    while let Some(batch) = reader.next_batch(rows)? {
        if let Some(e) = batch.errors.first() {
            anyhow::bail!("{e}");
        }
        let w = match &mut writer {
            Some(w) => w,
            None => writer.insert(Writer::create(
                &PathBuf::from(&output),
                batch.columns.iter().map(|c| c.name.clone()).collect(),
            )?),
        };
        w.write(&batch.columns)?;
    }
    let rows = match writer {
        Some(w) => w.finish()?,
        None => 0,
    };
    println!("{rows} rows");
    Ok(())
}
