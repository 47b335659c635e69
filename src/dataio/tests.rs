//! Round trips through each format, batch boundaries, and row errors with their numbers.

use super::*;

fn tmp(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = dir.path().join(name);
    (dir, p)
}

fn read_all(path: &Path, rows: usize) -> Vec<Batch> {
    let mut r = Reader::open(path).expect("open");
    let mut out = Vec::new();
    while let Some(b) = r.next_batch(rows).expect("batch") {
        out.push(b);
    }
    out
}

fn sample() -> Vec<Column> {
    vec![
        Column {
            name: "id".into(),
            values: Values::Str(vec!["a".into(), "b,\"c\"".into(), "d".into()]),
        },
        Column {
            name: "x".into(),
            values: Values::F32(vec![0.1, -2.5e-8, 3.0]),
        },
        Column {
            name: "n".into(),
            values: Values::I64(vec![1, -2, 3]),
        },
    ]
}

#[test]
fn every_format_reads_back_what_it_wrote() {
    for ext in ["csv", "jsonl", "parquet"] {
        let (_d, p) = tmp(&format!("t.{ext}"));
        let mut w = Writer::create(&p, vec!["id".into(), "x".into(), "n".into()]).expect("create");
        w.write(&sample()).expect("write");
        assert_eq!(w.finish().expect("finish"), 3);
        let batches = read_all(&p, 2);
        assert_eq!(batches.len(), 2, "{ext}");
        assert_eq!(batches[1].first_row, 3);
        let b = &batches[0];
        assert!(b.errors.is_empty(), "{ext}: {:?}", b.errors);
        assert_eq!(
            b.column("id").map(|c| &c.values),
            Some(&Values::Str(vec!["a".into(), "b,\"c\"".into()])),
            "{ext}"
        );
        let x = b.column("x").expect("x");
        assert_eq!(x.values.f64_at(1).map(|v| v as f32), Some(-2.5e-8), "{ext}");
        assert_eq!(
            b.column("n").and_then(|c| c.values.f64_at(1)),
            Some(-2.0),
            "{ext}"
        );
    }
}

#[test]
fn npy_round_trips_a_2d_float_array() {
    let (_d, p) = tmp("t.npy");
    let cols = vec![
        Column {
            name: "a".into(),
            values: Values::F32(vec![1.5, 2.5]),
        },
        Column {
            name: "b".into(),
            values: Values::F32(vec![-1.0, f32::MAX]),
        },
    ];
    let mut w = Writer::create(&p, vec!["a".into(), "b".into()]).expect("create");
    w.write(&cols).expect("write");
    w.finish().expect("finish");
    let r = Reader::open(&p).expect("open");
    assert_eq!(r.columns(), ["0", "1"]);
    let b = &read_all(&p, 10)[0];
    assert_eq!(b.columns[1].values, Values::F32(vec![-1.0, f32::MAX]));
}

#[test]
fn csv_row_errors_name_row_and_line() {
    let (_d, p) = tmp("t.csv");
    std::fs::write(&p, "a,b\n1,2\n3,x\n5\n").expect("write");
    let mut r = Reader::open(&p).expect("open");
    r.set_kind("b", Kind::Number);
    let b = r.next_batch(10).expect("batch").expect("rows");
    let msgs: Vec<String> = b.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        msgs,
        [
            "row 2 (line 3): column \"b\": \"x\" is not a number",
            "row 3 (line 4): 1 fields, the header has 2 (a truncated record?)"
        ]
    );
}

#[test]
fn empty_files_are_refused_by_name() {
    for ext in ["csv", "jsonl", "npy", "parquet"] {
        let (_d, p) = tmp(&format!("t.{ext}"));
        std::fs::write(&p, "").expect("write");
        let e = Reader::open(&p)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("t."), "{ext}: {e}");
        assert!(!e.is_empty(), "{ext}");
    }
}

#[test]
fn dropping_bad_rows_keeps_the_rest_aligned() {
    let (_d, p) = tmp("t.jsonl");
    std::fs::write(
        &p,
        "{\"a\":1,\"s\":\"x\"}\n{\"a\":\"no\",\"s\":\"y\"}\n{\"a\":3,\"s\":\"z\"}\n",
    )
    .expect("write");
    let mut r = Reader::open(&p).expect("open");
    r.set_kind("a", Kind::Number);
    let mut b = r.next_batch(10).expect("batch").expect("rows");
    assert_eq!(b.errors.len(), 1);
    assert_eq!(b.errors[0].line, Some(2));
    assert_eq!(b.drop_bad_rows(), 1);
    assert_eq!(
        b.column("a").map(|c| &c.values),
        Some(&Values::F64(vec![1.0, 3.0]))
    );
    assert_eq!(
        b.column("s").map(|c| &c.values),
        Some(&Values::Str(vec!["x".into(), "z".into()]))
    );
}

#[test]
fn a_csv_line_past_the_limit_ends_the_read_instead_of_growing() {
    let (_d, p) = tmp("t.csv");
    let mut text = String::from("a,b\n1,2\n");
    text.push_str(&"9".repeat((jsonl::MAX_LINE + 10) as usize));
    std::fs::write(&p, text).expect("write");
    let mut r = Reader::open(&p).expect("open");
    let e = r
        .next_batch(10)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("line 3: longer than 16 MiB"), "{e}");
}
