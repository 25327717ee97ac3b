//! `sidecar-load io`: exactly known reads, dirtied pages and syncs, from a process that
//! did nothing else.
//!
//! The work runs in a forked child that takes its own name first: the dynamic loader's
//! reads of this binary's libraries happened in the parent, before `main`, and a counter
//! keyed by the parent's process would include them. The child is a new process whose
//! every read, dirtied page and sync is one of those reported here.

use std::{ffi::CString, os::fd::AsRawFd as _, path::Path};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

/// What the child does.
pub struct Plan<'a> {
    pub comm: &'a str,
    pub file: &'a Path,
    /// Pages written into a new `file` (in writes of `write_size` bytes), then synced.
    pub dirty_pages: u64,
    pub write_size: usize,
    /// fsync calls, then as many fdatasync calls.
    pub syncs: u64,
    /// Read calls of `read_size` bytes each, spread over read, pread64, readv and preadv.
    pub reads: u64,
    pub read_size: usize,
}

const PAGE: u64 = 4096;

pub fn run(plan: &Plan<'_>) -> Result<serde_json::Value> {
    if plan.comm.len() > 15 {
        bail!("--child-comm {:?} is longer than 15 bytes", plan.comm);
    }
    if plan.read_size == 0 || plan.write_size == 0 {
        bail!("--read-size and --write-size must be positive");
    }
    let file_bytes = plan.dirty_pages * PAGE;
    if plan.reads > 0 && (plan.read_size as u64) > file_bytes {
        bail!(
            "reads of {} bytes need a file of as many bytes: --dirty-pages",
            plan.read_size
        );
    }
    let comm = CString::new(plan.comm)?;
    let path = plan.file.to_owned();
    // Everything the child needs is allocated before the fork.
    let write_buffer = vec![0x5au8; plan.write_size];
    let mut read_buffer = vec![0u8; plan.read_size];
    let _ = std::fs::remove_file(&path);
    // SAFETY: this process has one thread here (no lock can be held by another); the child
    // makes syscalls on memory allocated before the fork and ends with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        let status = match child(plan, &comm, &path, &write_buffer, &mut read_buffer) {
            Ok(()) => 0,
            Err(code) => code,
        };
        // SAFETY: ends the child without running the parent's destructors twice.
        unsafe { libc::_exit(status) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        bail!("waitpid: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!(
            "the child failed at step {} (status {status:#x})",
            libc::WEXITSTATUS(status)
        );
    }
    let size = std::fs::metadata(&path).context("the child's file")?.len();
    Ok(json!({
        "child_pid": pid,
        "dirtied_pages": plan.dirty_pages,
        "file_bytes": size,
        "fsync_calls": plan.syncs,
        "fdatasync_calls": plan.syncs,
        "read_calls": plan.reads,
        "read_bytes": plan.reads * plan.read_size as u64,
    }))
}

/// The child's work; an error is the step that failed, as the exit status.
fn child(
    plan: &Plan<'_>,
    comm: &CString,
    path: &Path,
    write_buffer: &[u8],
    read_buffer: &mut [u8],
) -> Result<(), i32> {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    if unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr(), 0, 0, 0) } != 0 {
        return Err(1);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|_| 2)?;
    let fd = file.as_raw_fd();
    let total = plan.dirty_pages * PAGE;
    let mut written = 0u64;
    while written < total {
        let len = (total - written).min(write_buffer.len() as u64) as usize;
        // SAFETY: writes `len` bytes of a live buffer.
        let n = unsafe { libc::write(fd, write_buffer.as_ptr().cast(), len) };
        if n <= 0 {
            return Err(3);
        }
        written += n as u64;
    }
    for _ in 0..plan.syncs {
        // SAFETY: plain syscalls on an open descriptor.
        if unsafe { libc::fsync(fd) } != 0 || unsafe { libc::fdatasync(fd) } != 0 {
            return Err(4);
        }
    }
    let size = read_buffer.len();
    let span = total - size as u64 + 1;
    for call in 0..plan.reads {
        let offset = (call * size as u64) % span;
        let iov = libc::iovec {
            iov_base: read_buffer.as_mut_ptr().cast(),
            iov_len: size,
        };
        // SAFETY: each reads at most `size` bytes into a live buffer of that size.
        let n = unsafe {
            match call % 4 {
                0 => {
                    if libc::lseek(fd, offset as libc::off_t, libc::SEEK_SET) < 0 {
                        return Err(5);
                    }
                    libc::read(fd, iov.iov_base, size)
                }
                1 => libc::pread(fd, iov.iov_base, size, offset as libc::off_t),
                2 => {
                    if libc::lseek(fd, offset as libc::off_t, libc::SEEK_SET) < 0 {
                        return Err(5);
                    }
                    libc::readv(fd, &iov, 1)
                }
                _ => libc::preadv(fd, &iov, 1, offset as libc::off_t),
            }
        };
        if n != size as isize {
            return Err(6);
        }
    }
    Ok(())
}
