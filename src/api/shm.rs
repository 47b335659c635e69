//! Triton's system shared memory extension: regions registered by name (a POSIX shm key, so a
//! file of `/dev/shm` only), and tensors read from and written into them by offset and size.
//! Off unless the operator enables it (`allow_shared_memory`); register and unregister are
//! control actions and take the admin guard. A region is never mapped: every access is a
//! `pread`/`pwrite` on the descriptor opened at register time, after checking the request
//! against the registered bounds and the file's current size (`fstat`), so a region another
//! process truncated gives a clear 400, never SIGBUS.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::admin::Authorized;
use super::error::ApiError;
use crate::routing::{InferRequest, InferResponse, NamedTensor};
use crate::tensor::{DataType, Tensor};

/// Where POSIX shared memory objects live (`shm_open` semantics on Linux).
const SHM_DIR: &str = "/dev/shm";
/// Registered regions at most: each holds a descriptor.
pub const MAX_REGIONS: usize = 1024;
/// Total registered bytes at most (they are the clients' memory, not ours: the bound keeps a
/// client from registering the whole of `/dev/shm` many times over).
pub const MAX_TOTAL_BYTES: u64 = 1 << 40;

/// A registered region as status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionStatus {
    pub name: String,
    pub key: String,
    pub offset: u64,
    pub byte_size: u64,
}

struct Region {
    status: RegionStatus,
    file: Arc<File>,
}

/// A tensor's place in a region, as a request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmRef {
    pub region: String,
    pub offset: u64,
    pub byte_size: u64,
}

/// An input whose bytes are in a region: read by [`SharedMemory::resolve`] after the decode,
/// into `request.inputs` at `index`.
#[derive(Debug, Clone)]
pub struct PendingInput {
    pub index: usize,
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<usize>,
    pub at: ShmRef,
}

/// What a request's tensors need from shared memory: inputs to read, outputs to write.
#[derive(Debug, Clone, Default)]
pub struct ShmUse {
    pub inputs: Vec<PendingInput>,
    /// (output name, where its bytes go).
    pub outputs: Vec<(String, ShmRef)>,
}

pub struct SharedMemory {
    enabled: bool,
    regions: Mutex<BTreeMap<String, Region>>,
}

/// A client's name or key as a message quotes it (Triton's `'name'`): cut, control characters
/// escaped.
fn shown(s: &str) -> String {
    s.chars().take(64).flat_map(char::escape_debug).collect()
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// Triton's answer to a region that is not registered, and its code (NOT_FOUND).
fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "Unable to find shared memory region: '{}'",
        shown(name)
    ))
}

/// CUDA shared memory is not offered, so no CUDA region is ever registered: Triton's answer
/// (its CPU-only build) to the status of one by name.
pub fn cuda_not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "Unable to find cuda shared memory region: '{}'",
        shown(name)
    ))
}

/// The file of a POSIX shm key: `/name`, one component, no `..`.
fn key_path(key: &str) -> Result<PathBuf, ApiError> {
    let name = key.strip_prefix('/').unwrap_or(key);
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 255
        || name.contains(['/', '\0'])
    {
        return Err(bad(format!(
            "shared memory key {:?} is not a POSIX shm name (\"/name\": one component under {SHM_DIR}, no '/' or '..')",
            shown(key)
        )));
    }
    Ok(PathBuf::from(SHM_DIR).join(name))
}

/// Opens the key's file as `shm_open` would, but never through a symlink and only a regular
/// file.
fn open_key(key: &str) -> Result<File, ApiError> {
    let path = key_path(key)?;
    let unable = |why: String| {
        bad(format!(
            "Unable to open shared memory region: '{}': {why}",
            shown(key)
        ))
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => unable("it is a symlink".into()),
            _ => unable(e.to_string()),
        })?;
    let meta = file.metadata().map_err(|e| unable(e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(unable("not a regular file".into()));
    }
    Ok(file)
}

/// Checks `offset..offset + byte_size` of the region `status` against the registered bounds
/// and the file's size now; the absolute file offset.
fn checked(status: &RegionStatus, file: &File, at: &ShmRef) -> Result<u64, ApiError> {
    let end = at
        .offset
        .checked_add(at.byte_size)
        .filter(|&end| end <= status.byte_size)
        .ok_or_else(|| {
            bad(format!(
                "Invalid offset + byte size for shared memory region: '{}': {} + {} is past its {} bytes",
                shown(&status.name),
                at.offset,
                at.byte_size,
                status.byte_size
            ))
        })?;
    let file_end = status.offset.saturating_add(end);
    let size = file
        .metadata()
        .map_err(|e| {
            bad(format!(
                "shared memory region '{}': {e}",
                shown(&status.name)
            ))
        })?
        .len();
    if file_end > size {
        return Err(bad(format!(
            "shared memory region '{}' was truncated to {size} bytes after it was registered: it no longer holds bytes {}..{file_end}",
            shown(&status.name),
            status.offset + at.offset
        )));
    }
    Ok(status.offset + at.offset)
}

impl SharedMemory {
    pub fn new(enabled: bool) -> SharedMemory {
        SharedMemory {
            enabled,
            regions: Mutex::new(BTreeMap::new()),
        }
    }

    fn enabled(&self) -> Result<(), ApiError> {
        if self.enabled {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "system shared memory is disabled on this server (the operator enables it with allow_shared_memory)".into(),
            ))
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Region>> {
        // A panic while holding the lock leaves the map itself consistent (inserts and removes
        // are single calls), so a poisoned lock is used as it is.
        self.regions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, _: Authorized, status: RegionStatus) -> Result<(), ApiError> {
        self.enabled()?;
        let name = status.name.clone();
        if name.is_empty() {
            return Err(bad("a shared memory region needs a name"));
        }
        let file = open_key(&status.key)?;
        let mut table = self.table();
        if table.contains_key(&name) {
            return Err(bad(format!(
                "shared memory region '{}' already in manager",
                shown(&name)
            )));
        }
        if table.values().any(|r| r.status.key == status.key) {
            return Err(bad(format!(
                "registering an active shared memory key, \"{}\", under a different name is not currently supported",
                shown(&status.key)
            )));
        }
        if table.len() >= MAX_REGIONS {
            return Err(bad(format!(
                "too many shared memory regions: the limit is {MAX_REGIONS}"
            )));
        }
        let total: u64 = table.values().map(|r| r.status.byte_size).sum();
        if total.saturating_add(status.byte_size) > MAX_TOTAL_BYTES {
            return Err(bad(format!(
                "shared memory regions would exceed {MAX_TOTAL_BYTES} bytes in all"
            )));
        }
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if status
            .offset
            .checked_add(status.byte_size)
            .is_none_or(|end| end > size)
        {
            return Err(bad(format!(
                "failed to register shared memory region '{}': invalid args: offset {} + byte_size {} is past the {size} bytes of {}",
                shown(&name),
                status.offset,
                status.byte_size,
                shown(&status.key)
            )));
        }
        table.insert(
            name,
            Region {
                status,
                file: Arc::new(file),
            },
        );
        Ok(())
    }

    /// One region, or every region when `name` is `None`.
    pub fn status(&self, name: Option<&str>) -> Result<Vec<RegionStatus>, ApiError> {
        self.enabled()?;
        let table = self.table();
        match name {
            None => Ok(table.values().map(|r| r.status.clone()).collect()),
            Some(n) => table.get(n).map(|r| vec![r.status.clone()]).ok_or_else(|| {
                ApiError::NotFound(format!(
                    "Unable to find system shared memory region: '{}'",
                    shown(n)
                ))
            }),
        }
    }

    /// One region, or all when `name` is `None`; a name not registered is not an error (as in
    /// Triton).
    pub fn unregister(&self, _: Authorized, name: Option<&str>) -> Result<(), ApiError> {
        self.enabled()?;
        let mut table = self.table();
        match name {
            None => table.clear(),
            Some(n) => {
                table.remove(n);
            }
        }
        Ok(())
    }

    fn lookup(&self, at: &ShmRef) -> Result<(RegionStatus, Arc<File>), ApiError> {
        self.enabled()?;
        let table = self.table();
        let r = table.get(&at.region).ok_or_else(|| not_found(&at.region))?;
        Ok((r.status.clone(), r.file.clone()))
    }

    /// The bytes at `at`, read off the runtime. `limit`: the most one tensor may take (the
    /// request size limit, as for a body).
    pub async fn read(&self, at: &ShmRef, limit: usize) -> Result<Bytes, ApiError> {
        let (status, file) = self.lookup(at)?;
        let len = usize::try_from(at.byte_size)
            .ok()
            .filter(|&l| l <= limit)
            .ok_or_else(|| {
                ApiError::PayloadTooLarge(format!(
                    "shared memory input of {} bytes is larger than the server's {limit} byte request limit",
                    at.byte_size
                ))
            })?;
        let at = at.clone();
        tokio::task::spawn_blocking(move || {
            let pos = checked(&status, &file, &at)?;
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, pos).map_err(|e| {
                bad(format!(
                    "shared memory region '{}' could not be read (truncated?): {e}",
                    shown(&status.name)
                ))
            })?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| bad(format!("shared memory read failed: {e}")))?
    }

    /// Writes `data` at `at` (which must hold it), off the runtime.
    pub async fn write(&self, output: &str, at: &ShmRef, data: Bytes) -> Result<(), ApiError> {
        let (status, file) = self.lookup(at)?;
        if data.len() as u64 > at.byte_size {
            return Err(bad(format!(
                "shared memory size specified with the request for output '{}' ({} bytes) should be at least {} bytes to hold the results",
                shown(output),
                at.byte_size,
                data.len()
            )));
        }
        let at = ShmRef {
            byte_size: data.len() as u64,
            ..at.clone()
        };
        tokio::task::spawn_blocking(move || {
            let pos = checked(&status, &file, &at)?;
            file.write_all_at(&data, pos).map_err(|e| {
                bad(format!(
                    "shared memory region '{}' could not be written: {e}",
                    shown(&status.name)
                ))
            })
        })
        .await
        .map_err(|e| bad(format!("shared memory write failed: {e}")))?
    }
}

/// The bytes the pending inputs will take once read, held against `max_inflight_bytes` like a
/// body's.
pub fn input_bytes(pending: &[PendingInput]) -> usize {
    pending.iter().fold(0usize, |sum, p| {
        sum.saturating_add(usize::try_from(p.at.byte_size).unwrap_or(usize::MAX))
    })
}

impl SharedMemory {
    /// Reads the pending inputs into the request, in their places.
    pub async fn resolve(
        &self,
        request: &mut InferRequest,
        pending: Vec<PendingInput>,
        limit: usize,
    ) -> Result<(), ApiError> {
        for p in pending {
            let bytes = self.read(&p.at, limit).await?;
            let tensor = Tensor::new(p.dtype, p.shape, bytes)
                .map_err(|e| bad(format!("input {}: {e}", shown(&p.name))))?;
            let index = p.index.min(request.inputs.len());
            request.inputs.insert(
                index,
                NamedTensor {
                    name: p.name,
                    tensor,
                },
            );
        }
        Ok(())
    }

    /// Writes the outputs that go to regions; the transports then answer them by reference.
    pub async fn deliver(
        &self,
        response: &InferResponse,
        outputs: &[(String, ShmRef)],
    ) -> Result<(), ApiError> {
        for (name, at) in outputs {
            if let Some(o) = response.outputs.iter().find(|o| &o.name == name) {
                self.write(name, at, o.tensor.data().clone()).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_component_under_dev_shm() {
        assert_eq!(key_path("/a").unwrap(), PathBuf::from("/dev/shm/a"));
        for k in ["/", "", "/..", "/.", "/a/b", "/../etc/passwd", "/a\0"] {
            assert!(key_path(k).is_err(), "{k:?}");
        }
    }
}
