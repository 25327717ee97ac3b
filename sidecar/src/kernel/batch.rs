//! BPF map batch operations (BPF_MAP_*_BATCH), which aya does not wrap.
//!
//! Draining entry by entry costs two or three syscalls per key (next key, lookup, delete);
//! a batch moves hundreds of entries per syscall, which is what keeps a drain of thousands of
//! processes cheap.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, BorrowedFd},
};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// bpf(2) with one of the `union bpf_attr` prefixes below.
fn bpf_call<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<()> {
    // SAFETY: callers pass a valid bpf_attr prefix for `cmd` ([`BatchAttr`] for the batch
    // commands, [`ElemAttr`] for the element ones) whose pointers refer to live buffers of
    // the sizes the kernel expects.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<A>()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn bpf_batch(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    bpf_call(cmd, attr)
}

/// The shape of a map as the batch calls see it.
#[derive(Clone, Copy, Debug)]
pub struct MapShape {
    pub key_size: usize,
    pub value_size: usize,
    /// Possible CPUs for a per-CPU map (each key then has one value per CPU), else 1.
    pub values_per_key: usize,
}

impl MapShape {
    /// Bytes of all values of one key; per-CPU values are padded to 8 bytes by the kernel.
    pub fn value_stride(&self) -> usize {
        if self.values_per_key > 1 {
            self.value_size.next_multiple_of(8) * self.values_per_key
        } else {
            self.value_size
        }
    }
}

/// Entries read from a map: keys and values, packed as the kernel returns them.
#[derive(Debug, Default)]
pub struct Entries {
    pub keys: Vec<u8>,
    pub values: Vec<u8>,
    pub count: usize,
}

/// Reads every entry of a map, deleting them when `delete` is set (hash maps only).
/// `chunk` is how many entries one syscall may return; it grows if a hash bucket holds more.
pub fn read_all(
    fd: BorrowedFd<'_>,
    shape: MapShape,
    delete: bool,
    mut chunk: usize,
) -> io::Result<Entries> {
    let cmd = if delete {
        BPF_MAP_LOOKUP_AND_DELETE_BATCH
    } else {
        BPF_MAP_LOOKUP_BATCH
    };
    let stride = shape.value_stride();
    // The batch position is a key for arrays and a bucket index for hash maps.
    let token_size = shape.key_size.max(8);
    let mut token_in = vec![0u8; token_size];
    let mut token_out = vec![0u8; token_size];
    let mut entries = Entries::default();
    let mut first = true;
    loop {
        let start = entries.count;
        entries.keys.resize((start + chunk) * shape.key_size, 0);
        entries.values.resize((start + chunk) * stride, 0);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token_in.as_ptr() as u64 },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: entries.keys[start * shape.key_size..].as_mut_ptr() as u64,
            values: entries.values[start * stride..].as_mut_ptr() as u64,
            count: u32::try_from(chunk).unwrap_or(u32::MAX),
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let result = bpf_batch(cmd, &mut attr);
        let got = attr.count as usize;
        match result {
            Ok(()) => {
                entries.count += got;
                std::mem::swap(&mut token_in, &mut token_out);
                first = false;
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                entries.count += got;
                break;
            }
            // A hash bucket holds more entries than fit: retry the same position, bigger.
            Err(err) if err.raw_os_error() == Some(libc::ENOSPC) && got == 0 => {
                chunk *= 2;
            }
            Err(err) => return Err(err),
        }
    }
    entries.keys.truncate(entries.count * shape.key_size);
    entries.values.truncate(entries.count * stride);
    Ok(entries)
}

/// Writes the same per-key value bytes to `keys` (u32 array indices) in one syscall.
pub fn update_all(
    fd: BorrowedFd<'_>,
    shape: MapShape,
    keys: &[u32],
    value: &[u8],
) -> io::Result<()> {
    let stride = shape.value_stride();
    assert_eq!(value.len(), stride, "one key's worth of value bytes");
    assert_eq!(shape.key_size, size_of::<u32>(), "array keys");
    let key_bytes: Vec<u8> = keys.iter().flat_map(|k| k.to_ne_bytes()).collect();
    let values = value.repeat(keys.len());
    let mut attr = BatchAttr {
        keys: key_bytes.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: u32::try_from(keys.len()).unwrap_or(u32::MAX),
        map_fd: fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    bpf_batch(BPF_MAP_UPDATE_BATCH, &mut attr)?;
    if attr.count as usize != keys.len() {
        return Err(io::Error::other(format!(
            "batch update wrote {} of {} entries",
            attr.count,
            keys.len()
        )));
    }
    Ok(())
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
/// The kernel-internal ENOTSUPP that bpf(2) returns for a batch command the map type lacks.
const ENOTSUPP: i32 = 524;

/// Whether a batch call failed because this kernel has no batch operations for the map's
/// type (per-CPU arrays before Linux 5.13, for one).
pub fn batch_unsupported(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(ENOTSUPP | libc::EOPNOTSUPP))
}

/// The `elem` member of `union bpf_attr` (BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM).
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn bpf_elem(cmd: libc::c_long, attr: &mut ElemAttr) -> io::Result<()> {
    bpf_call(cmd, attr)
}

/// [`read_all`] for an array on a kernel without batch operations for it: one lookup per
/// index. Arrays here have a handful of slots, so this costs a few syscalls per drain.
pub fn read_array_by_element(
    fd: BorrowedFd<'_>,
    shape: MapShape,
    size: u32,
) -> io::Result<Entries> {
    assert_eq!(shape.key_size, size_of::<u32>(), "array keys");
    let stride = shape.value_stride();
    let mut entries = Entries {
        keys: Vec::with_capacity(size as usize * 4),
        values: vec![0u8; size as usize * stride],
        count: 0,
    };
    for index in 0..size {
        let key = index.to_ne_bytes();
        let mut attr = ElemAttr {
            map_fd: fd.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            value: entries.values[index as usize * stride..].as_mut_ptr() as u64,
            ..ElemAttr::default()
        };
        bpf_elem(BPF_MAP_LOOKUP_ELEM, &mut attr)?;
        entries.keys.extend_from_slice(&key);
        entries.count += 1;
    }
    Ok(entries)
}

/// [`update_all`] one element at a time.
pub fn update_array_by_element(
    fd: BorrowedFd<'_>,
    shape: MapShape,
    keys: &[u32],
    value: &[u8],
) -> io::Result<()> {
    assert_eq!(
        value.len(),
        shape.value_stride(),
        "one key's worth of value bytes"
    );
    for key in keys {
        let key = key.to_ne_bytes();
        let mut attr = ElemAttr {
            map_fd: fd.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            value: value.as_ptr() as u64,
            ..ElemAttr::default()
        };
        bpf_elem(BPF_MAP_UPDATE_ELEM, &mut attr)?;
    }
    Ok(())
}
