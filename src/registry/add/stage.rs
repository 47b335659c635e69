//! The filesystem side of `models add`: a hidden staging directory removed unless published,
//! a rename that never replaces, writes synced before they are renamed into sight.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::AddError;

/// A hidden staging directory, removed on drop unless published.
pub(super) struct Stage {
    pub(super) path: PathBuf,
    published: bool,
}

impl Stage {
    pub(super) fn new(path: PathBuf) -> Result<Stage, AddError> {
        std::fs::create_dir(&path).map_err(|error| AddError::Write {
            path: path.clone(),
            error,
        })?;
        Ok(Stage {
            path,
            published: false,
        })
    }

    /// Renames the stage to `target` (which must not exist), then syncs the parent.
    pub(super) fn publish(mut self, target: &Path) -> Result<(), AddError> {
        rename_no_replace(&self.path, target).map_err(|error| AddError::Write {
            path: target.to_path_buf(),
            error,
        })?;
        self.published = true;
        sync_dir(target.parent().unwrap_or(Path::new(".")))
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A rename that fails when `to` exists (a concurrent add of the same version), where a plain
/// rename would replace an empty directory.
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::other("a path with a NUL byte"))
        };
        let (f, t) = (c(from)?, c(to)?);
        // SAFETY: both are valid NUL-terminated paths that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        // Filesystems without the flag: the checked plain rename below.
        if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
            return Err(e);
        }
    }
    if to.symlink_metadata().is_ok() {
        return Err(std::io::ErrorKind::AlreadyExists.into());
    }
    std::fs::rename(from, to)
}

pub(super) fn write_synced(path: &Path, data: &[u8]) -> Result<(), AddError> {
    let err = |error| AddError::Write {
        path: path.to_path_buf(),
        error,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let mut f = File::create_new(path).map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), AddError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|error| AddError::Write {
            path: dir.to_path_buf(),
            error,
        })
}
