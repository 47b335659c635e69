//! `ferroserve predict` run as a binary: predictions bit-equal to the server's HTTP answers for
//! the same rows, every file format, malformed inputs named by row, exit codes, Ctrl-C.
//! The progress bar on a terminal is checked in tests/predict_tty.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{bundled_models, wait_until, TestServer};
use ferroserve::dataio::{Column, Reader, Values, Writer};
use serde_json::{json, Value};

fn predict(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .arg("predict")
        .args(args)
        .output()
        .expect("ferroserve runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn repo() -> String {
    bundled_models().to_string_lossy().into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Deterministic feature values in [0, scale), as f32.
fn rows(n: usize, width: usize, scale: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            (0..width)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 40) as f32 / (1u64 << 24) as f32 * scale * 100.0).round() / 100.0
                })
                .collect()
        })
        .collect()
}

fn feature_columns(data: &[Vec<f32>]) -> Vec<Column> {
    let width = data[0].len();
    let mut cols = vec![Column {
        name: "id".into(),
        values: Values::Str((0..data.len()).map(|i| format!("row-{i}")).collect()),
    }];
    for c in 0..width {
        cols.push(Column {
            name: format!("f{c}"),
            values: Values::F32(data.iter().map(|r| r[c]).collect()),
        });
    }
    cols
}

fn write_file(path: &Path, cols: &[Column]) {
    let mut w =
        Writer::create(path, cols.iter().map(|c| c.name.clone()).collect()).expect("create");
    w.write(cols).expect("write");
    w.finish().expect("finish");
}

/// All columns of a file, concatenated over its batches, as f32 bit patterns or text.
fn read_file(path: &Path) -> Vec<(String, Vec<String>)> {
    let mut r = Reader::open(path).expect("output opens");
    let mut out: Vec<(String, Vec<String>)> = r
        .columns()
        .iter()
        .map(|c| (c.clone(), Vec::new()))
        .collect();
    while let Some(b) = r.next_batch(1000).expect("output reads") {
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        for (c, (_, v)) in b.columns.iter().zip(out.iter_mut()) {
            for i in 0..b.rows {
                v.push(match &c.values {
                    Values::Str(s) => s[i].clone(),
                    other => cell(other.f64_at(i).expect("a number")),
                });
            }
        }
    }
    out
}

/// A number as the f32 it is (outputs are FP32 or INT64, both exact through f64).
fn cell(x: f64) -> String {
    format!("{:08x}", (x as f32).to_bits())
}

/// The server's answer for `data` over HTTP, in requests of at most 64 rows, as output columns.
async fn server_columns(
    server: &TestServer,
    model: &str,
    data: &[Vec<f32>],
) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for chunk in data.chunks(64) {
        let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
        let body = json!({"inputs": [{"name": "input", "datatype": "FP32",
            "shape": [chunk.len(), chunk[0].len()], "data": flat}]});
        let r = server
            .client
            .post(server.url(&format!("/v2/models/{model}/infer")))
            .json(&body)
            .send()
            .await
            .expect("infer");
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("json");
        let mut cols = Vec::new();
        for o in v["outputs"].as_array().expect("outputs") {
            let name = o["name"].as_str().expect("name");
            let shape: Vec<usize> = o["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let width: usize = shape[1..].iter().product();
            let data = o["data"].as_array().expect("data");
            for c in 0..width {
                let col = if width == 1 {
                    name.to_string()
                } else {
                    format!("{name}_{c}")
                };
                let vals = (0..shape[0])
                    .map(|r| cell(data[r * width + c].as_f64().expect("number")))
                    .collect();
                cols.push((col, vals));
            }
        }
        if out.is_empty() {
            out = cols;
        } else {
            for ((_, a), (_, b)) in out.iter_mut().zip(cols) {
                a.extend(b);
            }
        }
    }
    out
}

async fn assert_bit_equal(
    model: &str,
    width: usize,
    scale: f32,
    input_ext: &str,
    output_ext: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let data = rows(200, width, scale, width as u64);
    let input = dir.path().join(format!("in.{input_ext}"));
    let mut cols = feature_columns(&data);
    if input_ext == "npy" {
        cols.remove(0);
    }
    write_file(&input, &cols);
    let output = dir.path().join(format!("out.{output_ext}"));
    let repo = repo();
    let mut args = vec![
        "--model-repository",
        repo.as_str(),
        "--model",
        model,
        "--input",
        s(&input),
        "--output",
        s(&output),
    ];
    if input_ext != "npy" {
        args.extend(["--keep", "id"]);
    }
    let o = predict(&args);
    assert!(o.status.success(), "{model}: {}", stderr(&o));
    let got = read_file(&output);
    let server = TestServer::start().await;
    let want = server_columns(&server, model, &data).await;
    let got_preds: Vec<_> = got.iter().filter(|(n, _)| n != "id").cloned().collect();
    assert_eq!(
        got_preds.len(),
        want.len(),
        "{model}: columns {:?}",
        got.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    for ((gn, gv), (wn, wv)) in got_preds.iter().zip(&want) {
        // .npy has no column names: its columns are numbered.
        if output_ext != "npy" {
            assert_eq!(gn, wn);
        }
        assert_eq!(gv.len(), 200, "{model} {gn}");
        assert_eq!(gv, wv, "{model} {gn}: predict and the server differ");
    }
    if input_ext != "npy" {
        let ids = &got[0];
        assert_eq!(ids.0, "id");
        assert_eq!(ids.1[199], "row-199");
    }
}

#[tokio::test]
async fn iris_from_csv_equals_the_servers_http_answers_bit_for_bit() {
    assert_bit_equal("iris", 4, 8.0, "csv", "csv").await;
}

#[tokio::test]
async fn digits_from_parquet_equals_the_servers_http_answers_bit_for_bit() {
    assert_bit_equal("digits", 64, 16.0, "parquet", "jsonl").await;
}

#[tokio::test]
async fn mlp_from_npy_equals_the_servers_http_answers_bit_for_bit() {
    assert_bit_equal("mlp", 64, 1.0, "npy", "npy").await;
}

#[tokio::test]
async fn mlp_from_jsonl_to_parquet_equals_the_servers_http_answers_bit_for_bit() {
    assert_bit_equal("mlp", 64, 1.0, "jsonl", "parquet").await;
}

fn iris_csv(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("in.csv");
    std::fs::write(&p, format!("id,a,b,c,d\n{body}")).unwrap();
    p
}

fn run_iris(input: &Path, output: &Path, extra: &[&str]) -> Output {
    let repo = repo();
    let mut args = vec![
        "--model-repository",
        &repo,
        "--model",
        "iris",
        "--input",
        s(input),
        "--output",
        s(output),
        "--keep",
        "id",
    ];
    args.extend(extra);
    predict(&args)
}

const GOOD: &str = "r1,5.1,3.5,1.4,0.2\nr2,6.2,2.9,4.3,1.3\n";

#[test]
fn a_non_numeric_value_fails_with_its_row_and_line_and_exit_code_4() {
    let dir = tempfile::tempdir().unwrap();
    let input = iris_csv(dir.path(), &format!("{GOOD}r3,5.0,abc,1.0,0.1\n"));
    let out = dir.path().join("out.csv");
    let o = run_iris(&input, &out, &[]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("row 3 (line 4): column \"b\": \"abc\" is not a number"),
        "{}",
        stderr(&o)
    );
    // Nothing of the failing batch was written: the header only.
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 1);
}

#[test]
fn a_truncated_csv_record_is_named_and_skipped_with_exit_code_3() {
    let dir = tempfile::tempdir().unwrap();
    let input = iris_csv(dir.path(), &format!("{GOOD}r3,5.0,3."));
    let out = dir.path().join("out.csv");
    let o = run_iris(&input, &out, &["--on-error", "skip"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("skipped row 3 (line 4): 3 fields, the header has 5"),
        "{err}"
    );
    assert!(
        err.contains("2 rows in 1 batches") && err.contains("1 bad rows skipped"),
        "{err}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let ids: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(ids, ["r1", "r2"]);
}

#[test]
fn a_bad_row_in_a_later_batch_leaves_the_earlier_batches_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = iris_csv(dir.path(), &format!("{GOOD}{GOOD}r5,1,2,3\n"));
    let out = dir.path().join("out.csv");
    let o = run_iris(&input, &out, &["--batch-size", "2"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("row 5 (line 6)"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 5);
}

#[test]
fn missing_feature_columns_are_refused_with_what_maps() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "id,a,b,c\nr1,1,2,3\n").unwrap();
    let o = run_iris(&input, &dir.path().join("out.csv"), &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("input \"input\" takes 4 value(s) per row")
            && err.contains("3 column(s) map to it: a, b, c"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_column_mapping_naming_an_absent_column_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = iris_csv(dir.path(), GOOD);
    let o = run_iris(
        &input,
        &dir.path().join("out.csv"),
        &["--columns", "input=a,b,c,zz"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no column \"zz\" for input \"input\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_explicit_column_mapping_reorders_features() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "d,c,b,a,id\n0.2,1.4,3.5,5.1,r1\n").unwrap();
    let out = dir.path().join("out.csv");
    let o = run_iris(&input, &out, &["--columns", "a,b,c,d"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    // Setosa (label 0) for 5.1,3.5,1.4,0.2; the reversed order would not be.
    assert!(text.lines().nth(1).unwrap().starts_with("r1,0,"), "{text}");
}

#[test]
fn empty_and_truncated_binary_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    for (name, bytes) in [
        ("empty.csv", Vec::new()),
        ("empty.jsonl", Vec::new()),
        ("empty.parquet", Vec::new()),
        ("cut.parquet", b"PAR1\x00\x00\x00".to_vec()),
        ("cut.npy", b"\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', 'fortran_order': False, 'shape': (10, 4), }".to_vec()),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let o = run_iris(&p, &out, &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(name), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

#[test]
fn a_truncated_npy_names_the_rows_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.npy");
    write_file(&p, &feature_columns(&rows(10, 4, 8.0, 1))[1..]);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 20]).unwrap();
    let repo = repo();
    let o = predict(&[
        "--model-repository",
        &repo,
        "--model",
        "iris",
        "--input",
        s(&p),
        "--output",
        s(&dir.path().join("o.csv")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("truncated: the data ends within rows 1..10 (the header says 10 rows)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_unknown_model_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let input = iris_csv(dir.path(), GOOD);
    let repo = repo();
    let o = predict(&[
        "--model-repository",
        &repo,
        "--model",
        "nope",
        "--input",
        s(&input),
        "--output",
        s(&dir.path().join("o.csv")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no model \"nope\""), "{}", stderr(&o));
}

#[test]
fn without_a_terminal_progress_is_plain_lines_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let input = iris_csv(dir.path(), GOOD);
    let o = run_iris(&input, &dir.path().join("out.csv"), &[]);
    assert!(o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("predict: done, written to") && err.contains("2 rows in 1 batches"),
        "{err}"
    );
    assert!(
        !err.contains('\u{1b}') && !err.contains('\r'),
        "no terminal codes: {err:?}"
    );
}

#[tokio::test]
async fn ctrl_c_stops_with_what_was_scored_flushed_and_exit_code_130() {
    let dir = tempfile::tempdir().unwrap();
    let body: String = (0..400_000)
        .map(|i| format!("r{i},5.1,3.5,1.4,0.2\n"))
        .collect();
    let input = iris_csv(dir.path(), &body);
    let out = dir.path().join("out.csv");
    let repo = repo();
    let child = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args([
            "predict",
            "--model-repository",
            &repo,
            "--model",
            "iris",
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--keep",
            "id",
            "--batch-size",
            "1",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Rows are being written (the output's buffer has been flushed once).
    wait_until(Duration::from_secs(60), "rows written", || async {
        std::fs::metadata(&out)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    })
    .await;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted; the rows scored so far are in"),
        "{err}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let written = text.lines().count() - 1;
    assert!(written > 0 && written < 400_000, "{written}");
    assert!(text.ends_with('\n'), "the last row is whole");
    assert!(
        err.contains(&format!(": {written} rows in {written} batches")),
        "{err}"
    );
}

#[test]
fn a_file_that_breaks_after_some_batches_keeps_those_batches_written() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.npy");
    write_file(&p, &feature_columns(&rows(10, 4, 8.0, 1))[1..]);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 20]).unwrap();
    let out = dir.path().join("o.csv");
    let repo = repo();
    let o = predict(&[
        "--model-repository",
        &repo,
        "--model",
        "iris",
        "--input",
        s(&p),
        "--output",
        s(&out),
        "--batch-size",
        "4",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("truncated: the data ends within rows 9..10"),
        "{err}"
    );
    assert!(
        err.contains("stopped; the rows read before are in"),
        "{err}"
    );
    // Rows 1..8 scored and flushed: a header and 8 lines.
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 9);
}
