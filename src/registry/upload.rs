//! A model written into the repository from a load request (Triton's `load_model(config=...,
//! files=...)`): every path checked to stay inside the model's directory, the files written
//! into a fresh hidden directory of the repository, then renamed into place, so the scanner
//! and the loader never see half a model and nothing is written outside the root.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::repository::CONFIG_FILE;

/// Files one upload may carry (Triton has no cap; a model is a few files).
pub const MAX_UPLOAD_FILES: usize = 64;

/// Directory levels a file path may have below the model directory (`1/model.onnx` is 2).
const MAX_DEPTH: usize = 8;

/// What a load request brings: the model's `config.toml` (translated from Triton's JSON) and
/// its files, by path relative to the model directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upload {
    pub config_toml: Option<String>,
    pub files: Vec<(String, Vec<u8>)>,
}

/// Why an upload was refused or could not be written.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UploadError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    /// Triton's words (its poll of the model failed: INTERNAL), then what could not be written.
    #[error("{0}")]
    Io(String),
}

/// `rel` as a path inside the model directory, or why not: relative, plain components only
/// (no `..`, no `.`, no root, no hidden names), bounded depth, not our `config.toml` (the
/// config comes translated from the `config` parameter).
pub fn checked_path(rel: &str) -> Result<PathBuf, UploadError> {
    let refuse = |why: &str| {
        UploadError::Invalid(format!(
            "Invalid file parameter {}: {why}",
            crate::error::quote(&format!("file:{rel}"))
        ))
    };
    if rel.is_empty() || rel.contains('\0') || rel.contains('\\') {
        return Err(refuse("must be a relative path inside the model directory"));
    }
    let path = Path::new(rel);
    let mut depth = 0;
    for c in path.components() {
        match c {
            Component::Normal(part) if !part.to_string_lossy().starts_with('.') => depth += 1,
            _ => return Err(refuse("must stay within model directory")),
        }
    }
    // `a//b`, `a/` and `a/./b` normalise away in `components`; refuse them rather than guess.
    if rel.split('/').any(|p| p.is_empty() || p.starts_with('.')) || depth == 0 {
        return Err(refuse("must stay within model directory"));
    }
    if depth > MAX_DEPTH {
        return Err(refuse("is nested too deep"));
    }
    if path == Path::new(CONFIG_FILE) {
        return Err(refuse(
            "config.toml comes from the 'config' parameter, not from a file",
        ));
    }
    Ok(path.to_path_buf())
}

/// Checks the whole upload before anything is written: file count, total size, paths, and
/// that no path is both a file and a directory.
pub fn check(upload: &Upload, max_bytes: usize) -> Result<Vec<PathBuf>, UploadError> {
    if upload.files.len() > MAX_UPLOAD_FILES {
        return Err(UploadError::TooLarge(format!(
            "{} files uploaded; at most {MAX_UPLOAD_FILES} are accepted",
            upload.files.len()
        )));
    }
    let total = upload
        .files
        .iter()
        .fold(0usize, |n, (_, b)| n.saturating_add(b.len()));
    if total > max_bytes {
        return Err(UploadError::TooLarge(format!(
            "uploaded files total {total} bytes, over max_request_bytes {max_bytes}"
        )));
    }
    let paths = upload
        .files
        .iter()
        .map(|(p, _)| checked_path(p))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, p) in paths.iter().enumerate() {
        if paths[..i]
            .iter()
            .any(|q| q == p || q.starts_with(p) || p.starts_with(q))
        {
            return Err(UploadError::Invalid(format!(
                "Invalid file parameter {}: given twice, or both as a file and a directory",
                crate::error::quote(&format!("file:{}", p.display()))
            )));
        }
    }
    Ok(paths)
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Writes the model `name` into `root` (canonical): with files, the whole directory is
/// replaced (the new one written hidden, the old moved aside, the new renamed in, the old
/// removed); with a config only, its `config.toml` is replaced the same way. `name` is a
/// valid model name (no separators, not hidden), so `root/name` is a child of the root.
pub fn write(
    root: &Path,
    name: &str,
    upload: &Upload,
    max_bytes: usize,
) -> Result<(), UploadError> {
    let paths = check(upload, max_bytes)?;
    let io = |what: &str, p: &Path, e: std::io::Error| {
        UploadError::Io(format!(
            "failed to load {}, failed to poll from model repository: cannot {what} {} in the repository: {e}",
            crate::error::quote(name),
            p.strip_prefix(root).unwrap_or(p).display()
        ))
    };
    let tag = format!(
        "{}-{}-{}",
        name,
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let target = root.join(name);
    if upload.files.is_empty() {
        // A config override of a model the repository holds.
        let Some(config) = &upload.config_toml else {
            return Ok(());
        };
        let tmp = target.join(format!(".config-{tag}.toml"));
        write_new(&tmp, config.as_bytes()).map_err(|e| io("write", &tmp, e))?;
        let dest = target.join(CONFIG_FILE);
        return std::fs::rename(&tmp, &dest).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io("rename into", &dest, e)
        });
    }
    let staging = root.join(format!(".upload-{tag}"));
    std::fs::create_dir(&staging).map_err(|e| io("create", &staging, e))?;
    let filled = (|| {
        for (path, (_, bytes)) in paths.iter().zip(&upload.files) {
            let file = staging.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
            }
            write_new(&file, bytes).map_err(|e| io("write", &file, e))?;
        }
        if let Some(config) = &upload.config_toml {
            let file = staging.join(CONFIG_FILE);
            write_new(&file, config.as_bytes()).map_err(|e| io("write", &file, e))?;
        }
        Ok(())
    })();
    if let Err(e) = filled {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let old = root.join(format!(".replaced-{tag}"));
    let had_old = match std::fs::symlink_metadata(&target) {
        Ok(_) => {
            std::fs::rename(&target, &old).map_err(|e| {
                let _ = std::fs::remove_dir_all(&staging);
                io("move aside", &target, e)
            })?;
            true
        }
        Err(_) => false,
    };
    if let Err(e) = std::fs::rename(&staging, &target) {
        if had_old {
            let _ = std::fs::rename(&old, &target);
        }
        let _ = std::fs::remove_dir_all(&staging);
        return Err(io("rename into", &target, e));
    }
    if had_old {
        // A symlinked model directory is only unlinked: what it pointed to is not ours.
        let removed = match std::fs::symlink_metadata(&old) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&old),
            _ => std::fs::remove_file(&old),
        };
        if let Err(e) = removed {
            tracing::warn!(path = %old.display(), "cannot remove the replaced model directory: {e}");
        }
    }
    Ok(())
}

/// A new file (never an existing one, never through a symlink), written and synced.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_model_directory_are_refused() {
        assert_eq!(
            checked_path("1/model.onnx").unwrap(),
            PathBuf::from("1/model.onnx")
        );
        for bad in [
            "../x",
            "1/../../x",
            "/etc/passwd",
            "",
            ".",
            "1/./m",
            ".hidden",
            "1/.x",
            "a//b",
            "a/",
            "a\\b",
            "config.toml",
            "a\0b",
        ] {
            assert!(checked_path(bad).is_err(), "{bad:?}");
        }
        assert!(checked_path("a/".repeat(9).trim_end_matches('/')).is_err());
    }

    #[test]
    fn uploads_over_the_caps_are_refused_before_writing() {
        let many = Upload {
            config_toml: None,
            files: (0..=MAX_UPLOAD_FILES)
                .map(|i| (format!("1/f{i}"), vec![]))
                .collect(),
        };
        assert!(matches!(
            check(&many, 1 << 20),
            Err(UploadError::TooLarge(_))
        ));
        let big = Upload {
            config_toml: None,
            files: vec![("1/model.onnx".into(), vec![0; 11])],
        };
        assert!(matches!(check(&big, 10), Err(UploadError::TooLarge(_))));
        let clash = Upload {
            config_toml: None,
            files: vec![("1".into(), vec![]), ("1/model.onnx".into(), vec![])],
        };
        assert!(matches!(check(&clash, 10), Err(UploadError::Invalid(_))));
    }
}
