//! Reading a file of the model repository, checked at open time: the file is opened first, then
//! the opened file's own path (what the kernel resolved, symlinks and all) must lie inside the
//! canonical root, and its bytes are read from that same descriptor. A check on the path
//! followed by a second open would let a swap between the two read anything; here what is
//! checked is what is read, and the backends get those bytes, never the path.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Why a repository file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("{}: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a file", .0.display())]
    NotAFile(PathBuf),
    #[error("{} resolves outside the model repository (to {})", .path.display(), .real.display())]
    Outside { path: PathBuf, real: PathBuf },
}

/// A file's bytes as read from the checked descriptor, with its size and modification time.
#[derive(Debug)]
pub struct RepoFile {
    pub bytes: Vec<u8>,
    pub fingerprint: Option<(u64, SystemTime)>,
}

/// Reads `path`, which must resolve inside `root` (canonical: `Path::canonicalize` of the
/// repository). Symlinks that stay inside the root are followed.
pub fn read_inside(root: &Path, path: &Path) -> Result<RepoFile, ReadError> {
    let (mut file, meta) = open_inside(root, path)?;
    // The length is a hint only: a file that grows while read is read to its end.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)
        .map_err(|source| ReadError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
    let fingerprint = meta.modified().ok().map(|m| (meta.len(), m));
    Ok(RepoFile { bytes, fingerprint })
}

/// Opens `path` for reading, checked as [`read_inside`] checks it, and returns the descriptor
/// with its metadata: for callers that read only parts of a file (ONNX external data).
pub fn open_inside(root: &Path, path: &Path) -> Result<(File, std::fs::Metadata), ReadError> {
    let unreadable = |source: std::io::Error| ReadError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::Missing(path.to_path_buf()),
        _ => unreadable(e),
    })?;
    let real = real_path(&file, path).map_err(unreadable)?;
    if !real.starts_with(root) {
        return Err(ReadError::Outside {
            path: path.to_path_buf(),
            real,
        });
    }
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile(path.to_path_buf()));
    }
    Ok((file, meta))
}

/// Opens for reading without blocking: a FIFO planted as `model.onnx` must not hang the load
/// in `open` (it is refused as not a file right after).
fn open(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// The path of the file `file` refers to. On Linux the kernel says it (`/proc/self/fd`), which
/// no later rename or symlink swap can change. Elsewhere (or without /proc) the path is
/// canonicalised and must name the same file (device and inode) as the open descriptor.
fn real_path(file: &File, path: &Path) -> std::io::Result<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            return Ok(real);
        }
    }
    let real = path.canonicalize()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let (opened, named) = (file.metadata()?, std::fs::metadata(&real)?);
        if (opened.dev(), opened.ino()) != (named.dev(), named.ino()) {
            return Err(std::io::Error::other(
                "the file changed while it was opened",
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(real)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn repo() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        (dir, root)
    }

    #[test]
    fn a_file_inside_is_read_through_an_inside_symlink() {
        let (_dir, root) = repo();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/f"), b"bytes").unwrap();
        symlink(root.join("a/f"), root.join("link")).unwrap();
        let file = read_inside(&root, &root.join("link")).unwrap();
        assert_eq!(file.bytes, b"bytes");
        assert_eq!(file.fingerprint.unwrap().0, 5);
    }

    #[test]
    fn a_symlink_out_is_refused_naming_both_paths() {
        let (_dir, root) = repo();
        let (_out, outside) = repo();
        std::fs::write(outside.join("f"), b"secret").unwrap();
        symlink(&outside, root.join("v")).unwrap();
        let err = read_inside(&root, &root.join("v/f")).unwrap_err();
        assert!(matches!(err, ReadError::Outside { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(&root.join("v/f").display().to_string()),
            "{message}"
        );
        assert!(
            message.contains("outside the model repository"),
            "{message}"
        );
    }

    #[test]
    fn missing_files_directories_and_fifos_are_refused() {
        let (_dir, root) = repo();
        assert!(matches!(
            read_inside(&root, &root.join("none")),
            Err(ReadError::Missing(_))
        ));
        std::fs::create_dir(root.join("d")).unwrap();
        assert!(matches!(
            read_inside(&root, &root.join("d")),
            Err(ReadError::NotAFile(_))
        ));
        let fifo =
            std::ffi::CString::new(root.join("p").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_inside(&root, &root.join("p")),
            Err(ReadError::NotAFile(_))
        ));
    }
}
