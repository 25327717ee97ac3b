//! Finding (or mounting) tracefs and reading tracepoint format files.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// Mount points where tracefs is looked for, in order (aya attaches through the same ones).
const MOUNT_POINTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Tests set this to a comma-separated list of `category:event` to make those tracepoints
/// look missing, which is the only way to exercise that path on a kernel that has them.
pub const FAULT_MISSING_TRACEPOINTS: &str = "SIDECAR_FAULT_MISSING_TRACEPOINTS";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted at {} and mounting it is disabled (tracefs.mount: false)",
        MOUNT_POINTS[0]
    )]
    NotMounted,
    #[error("tracefs is not mounted and mounting it at {path} failed: {source}")]
    MountFailed { path: String, source: io::Error },
    #[error("tracepoint {category}:{event} does not exist on this kernel")]
    MissingEvent { category: String, event: String },
    #[error("tracepoint {category}:{event}: cannot read {path}: {source}")]
    Read {
        category: String,
        event: String,
        path: PathBuf,
        source: io::Error,
    },
}

/// How tracefs was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mounted {
    AlreadyMounted,
    MountedBySidecar,
}

#[derive(Clone, Debug)]
pub struct Tracefs {
    root: PathBuf,
    missing: Vec<String>,
}

impl Tracefs {
    /// Uses a mounted tracefs, or mounts one when allowed.
    pub fn locate(mount: bool) -> Result<(Tracefs, Mounted), TracefsError> {
        if let Some(root) = MOUNT_POINTS.iter().map(Path::new).find(|p| is_tracefs(p)) {
            return Ok((Tracefs::at(root), Mounted::AlreadyMounted));
        }
        if !mount {
            return Err(TracefsError::NotMounted);
        }
        let target = MOUNT_POINTS[0];
        mount_tracefs(target).map_err(|source| TracefsError::MountFailed {
            path: target.to_owned(),
            source,
        })?;
        Ok((Tracefs::at(Path::new(target)), Mounted::MountedBySidecar))
    }

    /// A tracefs rooted at `root` (tests point this at a directory of format files).
    pub fn at(root: &Path) -> Tracefs {
        let missing = std::env::var(FAULT_MISSING_TRACEPOINTS)
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Tracefs {
            root: root.to_owned(),
            missing,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn event_format(&self, category: &str, event: &str) -> Result<EventFormat, TracefsError> {
        let missing = || TracefsError::MissingEvent {
            category: category.to_owned(),
            event: event.to_owned(),
        };
        if self
            .missing
            .iter()
            .any(|m| *m == format!("{category}:{event}"))
        {
            return Err(missing());
        }
        let path = self
            .root
            .join("events")
            .join(category)
            .join(event)
            .join("format");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(EventFormat::parse(&text)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Err(missing()),
            Err(source) => Err(TracefsError::Read {
                category: category.to_owned(),
                event: event.to_owned(),
                path,
                source,
            }),
        }
    }
}

fn is_tracefs(path: &Path) -> bool {
    path.join("events").is_dir()
}

fn mount_tracefs(target: &str) -> io::Result<()> {
    fs::create_dir_all(target)?;
    let source = c"nodev";
    let fstype = c"tracefs";
    let target = std::ffi::CString::new(target).map_err(io::Error::other)?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One field of a tracepoint's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// The fields of a tracepoint, from its `format` file.
#[derive(Clone, Debug, Default)]
pub struct EventFormat {
    pub fields: Vec<Field>,
}

impl EventFormat {
    /// Parses lines such as
    /// `\tfield:unsigned long i_ino;\toffset:8;\tsize:8;\tsigned:0;`.
    pub fn parse(text: &str) -> EventFormat {
        let fields = text
            .lines()
            .filter_map(|line| {
                let mut declaration = None;
                let mut offset = None;
                let mut size = None;
                for part in line.split(';').map(str::trim) {
                    if let Some(rest) = part.strip_prefix("field:") {
                        declaration = Some(rest);
                    } else if let Some(rest) = part.strip_prefix("offset:") {
                        offset = rest.parse().ok();
                    } else if let Some(rest) = part.strip_prefix("size:") {
                        size = rest.parse().ok();
                    }
                }
                Some(Field {
                    name: field_name(declaration?)?,
                    offset: offset?,
                    size: size?,
                })
            })
            .collect();
        EventFormat { fields }
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// The identifier of a C declaration: `unsigned long i_ino` -> `i_ino`, `char comm[16]` ->
/// `comm`, `__data_loc char[] filename` -> `filename`.
fn field_name(declaration: &str) -> Option<String> {
    let last = declaration.split_whitespace().last()?;
    let name = last.split('[').next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADD_TO_PAGE_CACHE: &str = "name: mm_filemap_add_to_page_cache
ID: 510
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:unsigned long pfn;\toffset:8;\tsize:8;\tsigned:0;
\tfield:unsigned long i_ino;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long index;\toffset:24;\tsize:8;\tsigned:0;
\tfield:dev_t s_dev;\toffset:32;\tsize:4;\tsigned:0;
\tfield:unsigned char order;\toffset:36;\tsize:1;\tsigned:0;

print fmt: \"dev %d:%d ino %lx pfn=0x%lx ofs=%lu order=%u\", ...
";

    #[test]
    fn parses_a_real_format_file() {
        let format = EventFormat::parse(ADD_TO_PAGE_CACHE);
        assert_eq!(format.fields.len(), 9);
        let order = format.field("order").unwrap();
        assert_eq!((order.offset, order.size), (36, 1));
        let dev = format.field("s_dev").unwrap();
        assert_eq!((dev.offset, dev.size), (32, 4));
        assert!(format.field("nope").is_none());
    }

    #[test]
    fn field_names_from_declarations() {
        assert_eq!(field_name("char comm[16]").as_deref(), Some("comm"));
        assert_eq!(
            field_name("__data_loc char[] filename").as_deref(),
            Some("filename")
        );
        assert_eq!(
            field_name("int __syscall_nr").as_deref(),
            Some("__syscall_nr")
        );
    }
}
