//! Every file operation that is not a segment's data I/O: the metadata log, snapshots,
//! checkpoints, markers, indexes, directories. They run on the runtime's blocking pool (they are
//! small and rare, and some have no io_uring form), and each consults [`Faults`] first, so a test
//! can make any of them fail like the disk would (`FaultOp::SideFile`).
//!
//! Durability is explicit in the names: [`write_atomic`] and [`append_durable`] return only once
//! the bytes (and, for a new name, the directory entry) are on disk; the rest do not sync.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::fault::{FaultOp, Faults};

async fn run<T: Send + 'static>(faults: &Faults, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    faults.check(FaultOp::SideFile)?;
    super::blocking(f).await?
}

/// The whole file at `path`, or `None` when there is none.
pub async fn read(path: &Path, faults: &Faults) -> io::Result<Option<Vec<u8>>> {
    let path = path.to_owned();
    run(faults, move || match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    })
    .await
}

/// Replaces the file at `path` with `bytes` atomically and durably: a temporary file beside it
/// is written and synced, renamed over `path`, and the directory synced. A crash leaves either
/// the old file or the new one.
pub async fn write_atomic(path: &Path, bytes: Vec<u8>, faults: &Faults) -> io::Result<()> {
    let path = path.to_owned();
    run(faults, move || write_atomic_now(&path, &bytes)).await
}

fn write_atomic_now(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_parent_now(path)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn sync_parent_now(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => std::fs::File::open(parent)?.sync_all(),
        _ => Ok(()),
    }
}

/// Appends `bytes` to the file at `path` (creating it) and fdatasyncs it before returning. A
/// failed append is cut off again, so a later append never lands behind half a record.
pub async fn append_durable(path: &Path, bytes: Vec<u8>, faults: &Faults) -> io::Result<()> {
    let path = path.to_owned();
    run(faults, move || {
        let created = !path.exists();
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let before = file.metadata()?.len();
        let appended = file.write_all(&bytes).and_then(|()| file.sync_data());
        if let Err(err) = appended {
            // Best effort: shrinking needs no free space, and the file then ends where it did.
            let _ = file.set_len(before).and_then(|()| file.sync_data());
            return Err(err);
        }
        if created { sync_parent_now(&path) } else { Ok(()) }
    })
    .await
}

/// Cuts the file at `path` to `len` bytes and syncs it.
pub async fn truncate(path: &Path, len: u64, faults: &Faults) -> io::Result<()> {
    let path = path.to_owned();
    run(faults, move || {
        let file = std::fs::OpenOptions::new().write(true).open(&path)?;
        file.set_len(len)?;
        file.sync_data()
    })
    .await
}

/// The length of the file at `path`, `None` when there is none.
pub async fn read_len(path: &Path, faults: &Faults) -> io::Result<Option<u64>> {
    let path = path.to_owned();
    run(faults, move || match std::fs::metadata(&path) {
        Ok(meta) => Ok(Some(meta.len())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    })
    .await
}

/// Writes `bytes` to `path` without syncing (files that are rebuilt when lost, such as indexes).
pub async fn write(path: &Path, bytes: Vec<u8>, faults: &Faults) -> io::Result<()> {
    let path = path.to_owned();
    run(faults, move || std::fs::write(&path, bytes)).await
}

/// Removes the file at `path`; `false` when there was none.
pub async fn remove_file(path: &Path, faults: &Faults) -> io::Result<bool> {
    let path = path.to_owned();
    run(faults, move || match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    })
    .await
}

/// Removes a directory and everything in it; a missing directory is not an error.
pub async fn remove_dir_all(path: &Path, faults: &Faults) -> io::Result<()> {
    let path = path.to_owned();
    run(faults, move || match std::fs::remove_dir_all(&path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    })
    .await
}

/// An exclusive lock on a directory (an flock'd `.lock` file in it), held until dropped: two
/// processes never hold it at once.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    /// Takes the lock on `dir` (creating it), or fails at once when another process holds it.
    /// Blocking: for start-up, before any shard runs.
    pub fn acquire(dir: &Path, faults: &Faults) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        faults.check(FaultOp::SideFile)?;
        std::fs::create_dir_all(dir)?;
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(".lock"))?;
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "in use by another broker (lock held)"));
        }
        Ok(Self { _file: file })
    }
}

/// Removes a directory so that a crash part-way leaves nothing under its name: it is renamed
/// aside first (to `<name>.<random>-delete`, which a broker removes at start), then removed.
pub async fn discard_dir(path: &Path, faults: &Faults) -> io::Result<()> {
    let doomed = path.with_extension(format!("{}-delete", uuid::Uuid::new_v4().simple()));
    rename(path, &doomed, faults).await?;
    remove_dir_all(&doomed, faults).await
}

/// Renames `from` to `to` (not synced: call [`sync_dir`] when the new name must survive a crash).
pub async fn rename(from: &Path, to: &Path, faults: &Faults) -> io::Result<()> {
    let (from, to) = (from.to_owned(), to.to_owned());
    run(faults, move || std::fs::rename(&from, &to)).await
}

/// Creates a directory and its missing parents.
pub async fn create_dir_all(path: &Path, faults: &Faults) -> io::Result<()> {
    let path = path.to_owned();
    run(faults, move || std::fs::create_dir_all(&path)).await
}

/// Makes the entries of directory `path` durable (after creating, renaming or removing files).
pub async fn sync_dir(path: &Path, faults: &Faults) -> io::Result<()> {
    let path = path.to_owned();
    run(faults, move || std::fs::File::open(&path)?.sync_all()).await
}

/// The names in directory `path` (empty when it does not exist).
pub async fn list_dir(path: &Path, faults: &Faults) -> io::Result<Vec<String>> {
    let path = path.to_owned();
    run(faults, move || match std::fs::read_dir(&path) {
        Ok(entries) => {
            Ok(entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err),
    })
    .await
}

/// Whether `path` names an existing directory.
pub async fn is_dir(path: &Path, faults: &Faults) -> io::Result<bool> {
    let path = path.to_owned();
    run(faults, move || Ok(path.is_dir())).await
}

/// The filesystem holding `path`: (total bytes, bytes an unprivileged writer can still use).
pub fn space(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: statvfs only writes into the struct we pass; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let unit = stat.f_frsize as u64;
    Ok((stat.f_blocks as u64 * unit, stat.f_bavail as u64 * unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_and_faults_reach_side_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let faults = Faults::none();
        super::super::block_on(async {
            assert_eq!(read(&path, &faults).await.unwrap(), None);
            write_atomic(&path, b"one".to_vec(), &faults).await.unwrap();
            write_atomic(&path, b"two".to_vec(), &faults).await.unwrap();
            assert_eq!(read(&path, &faults).await.unwrap().as_deref(), Some(&b"two"[..]));
            append_durable(&path, b"+".to_vec(), &faults).await.unwrap();
            assert_eq!(read(&path, &faults).await.unwrap().as_deref(), Some(&b"two+"[..]));
            faults.fail_next(FaultOp::SideFile, libc::ENOSPC);
            let err = write_atomic(&path, b"three".to_vec(), &faults).await.unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
            assert_eq!(
                read(&path, &faults).await.unwrap().as_deref(),
                Some(&b"two+"[..]),
                "a failed write leaves the old file"
            );
            assert!(remove_file(&path, &faults).await.unwrap());
            assert!(!remove_file(&path, &faults).await.unwrap());
        });
    }
}
