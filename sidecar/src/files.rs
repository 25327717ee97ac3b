//! Reading the files the configuration names (the configuration itself, the bearer token,
//! TLS keys and certificates): regular files only, of bounded size, so that a FIFO cannot hang
//! start-up and `/dev/zero` cannot eat memory.

use std::{
    fs,
    io::{self, Read as _},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

/// The largest configuration file: 65,535 workloads written one a line fit in a few MiB.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// The largest token file.
pub const MAX_TOKEN_BYTES: u64 = 64 << 10;
/// The largest PEM file (a certificate chain or a key).
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Reads `path` whole when it is a regular file of at most `limit` bytes. The file is opened
/// without blocking (a FIFO would wait for a writer) and checked on the opened descriptor, so
/// that a file swapped after a look at its name is still checked.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut data = Vec::with_capacity(metadata.len().min(limit) as usize);
    file.take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(data)
}

/// [`read_regular`] as text.
pub fn read_regular_text(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, limit)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bounded_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "12345").unwrap();
        assert_eq!(read_regular(&file, 5).unwrap(), b"12345");
        let err = read_regular(&file, 4).unwrap_err();
        assert!(err.to_string().contains("larger than 4 bytes"), "{err}");
        // Neither blocks nor grows: a FIFO with no writer, /dev/zero, a directory.
        let fifo = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        for path in [fifo.as_path(), Path::new("/dev/zero"), dir.path()] {
            let err = read_regular(path, 1 << 20).unwrap_err();
            assert!(
                err.to_string().contains("not a regular file")
                    || err.kind() == io::ErrorKind::IsADirectory,
                "{}: {err}",
                path.display()
            );
        }
    }
}
