//! `ferroserve predict` on a pseudo-terminal (posix_openpt): stderr is a terminal, so it
//! draws a progress bar (percent, rows, rows/s, ETA) before the summary.

mod common;

use std::ffi::CStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::process::{Command, Stdio};

use common::bundled_models;

/// A pseudo-terminal: the master end (read here) and the path of the slave end.
fn open_pty() -> (File, String) {
    // SAFETY: plain libc calls on a descriptor we own; ptsname_r writes into our buffer.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(master), 0, "grantpt");
        assert_eq!(libc::unlockpt(master), 0, "unlockpt");
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let slave = CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
        (File::from_raw_fd(master), slave)
    }
}

#[test]
fn on_a_terminal_predict_draws_a_progress_bar_with_rows_rate_and_eta() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let body: String = (0..3000)
        .map(|i| format!("r{i},5.1,3.5,1.4,0.2\n"))
        .collect();
    std::fs::write(&input, format!("id,a,b,c,d\n{body}")).unwrap();
    let (mut master, slave) = open_pty();
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slave)
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(["predict", "--model-repository"])
        .arg(bundled_models())
        .args(["--model", "iris", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("out.csv"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(tty)
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    // The child has exited and our copy of the slave is closed: the master reads what was
    // written, then EIO.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("100%"), "the bar reaches 100%: {text:?}");
    assert!(
        text.contains("3000 rows,") && text.contains("rows/s"),
        "{text:?}"
    );
    assert!(text.contains("ETA"), "{text:?}");
    assert!(
        text.contains('\u{1b}') || text.contains('\r'),
        "drawn with terminal codes: {text:?}"
    );
    assert!(
        text.contains("predict: done, written to") && text.contains("3000 rows in 47 batches"),
        "{text:?}"
    );
}
