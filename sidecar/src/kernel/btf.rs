//! Just enough of BTF to find where a struct member lives (the offsets the page-cache
//! programs need to read a file's size, mapping->host->i_size, and a read's request) and
//! what a kernel function's parameters are (the fexit fallback checks its target's).
//!
//! Format: Documentation/bpf/btf.rst. Type ids start at 1; each type is a 12-byte header
//! followed by kind-specific data whose length the kind and `vlen` give.

use std::{collections::HashMap, fs, path::Path};

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC: u32 = 12;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    #[error("BTF struct {0} has no member {1}")]
    NoMember(String, String),
    #[error("BTF has no function {0}")]
    NoFunction(String),
    #[error("BTF has no enumerator {0}")]
    NoEnumerator(String),
}

#[derive(Clone, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    /// Size for ints, structs, unions, enums; the referenced type for modifiers.
    size_or_type: u32,
    members: Vec<Member>,
    /// The parameter types of a FUNC_PROTO.
    params: Vec<u32>,
}

/// A parsed BTF blob, types and strings.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
    functions: HashMap<String, u32>,
    /// Every enumerator of every (32-bit) enum, by name; the first of a name wins.
    enumerators: HashMap<String, i64>,
}

/// The type of a function parameter or return value, as far as the programs care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// A pointer to a struct (or union) of this name (empty when anonymous).
    PointerTo(String),
    /// Another pointer.
    Pointer,
    /// An integer (or enum, or bool) of this many bytes.
    Int(u32),
    Void,
    Other,
}

/// A kernel function's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub params: Vec<ValueType>,
    pub ret: ValueType,
}

/// Where a member is, in bytes from the start of the outermost struct, and how big.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberPlace {
    pub offset: u32,
    pub size: u32,
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, BtfError> {
    data.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        Btf::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Btf::parse(&data)
    }

    /// Parses a little-endian BTF blob (the only byte order on the hosts we run on).
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if u16_at(data, 0)? != MAGIC {
            return Err(BtfError::Malformed("bad magic (or big-endian BTF)"));
        }
        let header_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_start = header_len + type_off;
        let type_data = data
            .get(types_start..types_start + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings_start = header_len + str_off;
        let strings = data
            .get(strings_start..strings_start + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();

        // Type id 0 is void.
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            size_or_type: 0,
            members: Vec::new(),
            params: Vec::new(),
        }];
        let mut enumerators: Vec<(u32, i32)> = Vec::new();
        let mut at = 0;
        while at < type_data.len() {
            let name_off = u32_at(type_data, at)?;
            let info = u32_at(type_data, at + 4)?;
            let size_or_type = u32_at(type_data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let mut params = Vec::new();
            if kind == KIND_ENUM {
                for i in 0..vlen {
                    let value = u32_at(type_data, at + i * 8 + 4)?;
                    enumerators.push((u32_at(type_data, at + i * 8)?, value as i32));
                }
            }
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let base = at + i * 12;
                        let offset = u32_at(type_data, base + 8)?;
                        members.push(Member {
                            name_off: u32_at(type_data, base)?,
                            type_id: u32_at(type_data, base + 4)?,
                            bit_offset: if kind_flag {
                                offset & 0x00ff_ffff
                            } else {
                                offset
                            },
                        });
                    }
                    vlen * 12
                }
                KIND_FUNC_PROTO => {
                    for i in 0..vlen {
                        params.push(u32_at(type_data, at + i * 8 + 4)?);
                    }
                    vlen * 8
                }
                KIND_ENUM => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                _ => 0,
            };
            at += extra;
            types.push(Type {
                name_off,
                kind,
                size_or_type,
                members,
                params,
            });
        }

        let mut btf = Btf {
            types,
            strings,
            structs: HashMap::new(),
            functions: HashMap::new(),
            enumerators: HashMap::new(),
        };
        let named = |kind: u32| -> HashMap<String, u32> {
            let mut found = HashMap::new();
            for (id, t) in btf.types.iter().enumerate() {
                if t.kind == kind && t.name_off != 0 {
                    // The first of a name wins (static functions can repeat in other units).
                    found
                        .entry(btf.name(t.name_off).to_owned())
                        .or_insert(id as u32);
                }
            }
            found
        };
        let (structs, functions) = (named(KIND_STRUCT), named(KIND_FUNC));
        btf.structs = structs;
        btf.functions = functions;
        let mut by_name = HashMap::new();
        for (name_off, value) in enumerators {
            by_name
                .entry(btf.name(name_off).to_owned())
                .or_insert(i64::from(value));
        }
        btf.enumerators = by_name;
        Ok(btf)
    }

    fn name(&self, offset: u32) -> &str {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Follows typedefs and modifiers to the type itself.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let ty = self.ty(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type;
                }
                _ => return Some(ty),
            }
        }
        None
    }

    fn size_of(&self, id: u32) -> Option<u32> {
        let ty = self.resolve(id)?;
        match ty.kind {
            KIND_PTR => Some(8),
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 => Some(ty.size_or_type),
            _ => None,
        }
    }

    /// Finds `member` in the members of type `id`, looking inside anonymous structs and
    /// unions; returns its byte offset and size.
    fn find(&self, id: u32, member: &str) -> Option<MemberPlace> {
        let ty = self.resolve(id)?;
        for m in &ty.members {
            let name = self.name(m.name_off);
            if name == member {
                return Some(MemberPlace {
                    offset: m.bit_offset / 8,
                    size: self.size_of(m.type_id)?,
                });
            }
            if name.is_empty()
                && let Some(inner) = self.find(m.type_id, member)
            {
                return Some(MemberPlace {
                    offset: m.bit_offset / 8 + inner.offset,
                    size: inner.size,
                });
            }
        }
        None
    }

    /// What a value of type `id` is, after typedefs and modifiers.
    fn value_type(&self, id: u32) -> ValueType {
        if id == 0 {
            return ValueType::Void;
        }
        let Some(ty) = self.resolve(id) else {
            return ValueType::Other;
        };
        match ty.kind {
            KIND_PTR => match self.resolve(ty.size_or_type) {
                Some(to) if to.kind == KIND_STRUCT || to.kind == KIND_UNION => {
                    ValueType::PointerTo(self.name(to.name_off).to_owned())
                }
                _ => ValueType::Pointer,
            },
            KIND_INT | KIND_ENUM | KIND_ENUM64 => ValueType::Int(ty.size_or_type),
            _ => ValueType::Other,
        }
    }

    /// The signature of the kernel function `name`.
    pub fn function(&self, name: &str) -> Result<Signature, BtfError> {
        let func = self
            .functions
            .get(name)
            .and_then(|&id| self.ty(id))
            .ok_or_else(|| BtfError::NoFunction(name.to_owned()))?;
        let proto = self
            .ty(func.size_or_type)
            .filter(|t| t.kind == KIND_FUNC_PROTO)
            .ok_or(BtfError::Malformed("function without a prototype"))?;
        Ok(Signature {
            params: proto.params.iter().map(|&p| self.value_type(p)).collect(),
            ret: self.value_type(proto.size_or_type),
        })
    }

    /// The value of the enumerator `name` (e.g. `PG_head` of `enum pageflags`, whose values
    /// depend on the kernel's configuration).
    pub fn enumerator(&self, name: &str) -> Result<i64, BtfError> {
        self.enumerators
            .get(name)
            .copied()
            .ok_or_else(|| BtfError::NoEnumerator(name.to_owned()))
    }

    /// The place of `member` in `struct name`.
    pub fn member(&self, name: &str, member: &str) -> Result<MemberPlace, BtfError> {
        let id = *self
            .structs
            .get(name)
            .ok_or_else(|| BtfError::NoStruct(name.to_owned()))?;
        self.find(id, member)
            .ok_or_else(|| BtfError::NoMember(name.to_owned(), member.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made BTF: `struct inner { int a; }` and
    /// `struct outer { long pad; union { int x; struct inner in; }; struct inner *p; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0long\0inner\0a\0outer\0pad\0x\0in\0p\0".to_vec();
        let name = |s: &str| -> u32 {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .map(|p| p as u32 + 1)
                .unwrap()
        };
        let mut types: Vec<u32> = Vec::new();
        let mut push = |words: &[u32]| types.extend_from_slice(words);
        let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
        // 1: int (4 bytes)
        push(&[name("int"), info(KIND_INT, 0), 4, 32]);
        // 2: long (8 bytes)
        push(&[name("long"), info(KIND_INT, 0), 8, 64]);
        // 3: struct inner { int a; }
        push(&[name("inner"), info(KIND_STRUCT, 1), 4, name("a"), 1, 0]);
        // 4: anonymous union { int x; struct inner in; }
        push(&[0, info(KIND_UNION, 2), 4, name("x"), 1, 0, name("in"), 3, 0]);
        // 5: struct inner *
        push(&[0, info(KIND_PTR, 0), 3]);
        // 6: struct outer { long pad; union; struct inner *p; }
        push(&[
            name("outer"),
            info(KIND_STRUCT, 3),
            24,
            name("pad"),
            2,
            0,
            0,
            4,
            64,
            name("p"),
            5,
            128,
        ]);
        blob(&types, &strings)
    }

    #[test]
    fn members_through_anonymous_unions() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(
            btf.member("outer", "pad").unwrap(),
            MemberPlace { offset: 0, size: 8 }
        );
        assert_eq!(
            btf.member("outer", "x").unwrap(),
            MemberPlace { offset: 8, size: 4 }
        );
        assert_eq!(
            btf.member("outer", "in").unwrap(),
            MemberPlace { offset: 8, size: 4 }
        );
        assert_eq!(
            btf.member("outer", "p").unwrap(),
            MemberPlace {
                offset: 16,
                size: 8
            }
        );
        assert!(matches!(
            btf.member("outer", "q"),
            Err(BtfError::NoMember(..))
        ));
        assert!(matches!(
            btf.member("nope", "p"),
            Err(BtfError::NoStruct(_))
        ));
    }

    /// A BTF blob from its types (words) and strings.
    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let types: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut blob = Vec::new();
        blob.extend_from_slice(&MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for word in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&word.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        blob
    }

    /// The read functions of 5.10 and 6.12, as their BTF describes them:
    /// `ssize_t generic_file_buffered_read(struct kiocb *, struct iov_iter *, ssize_t)` and
    /// `int filemap_get_pages(struct kiocb *, size_t, struct folio_batch *, bool)`.
    #[test]
    fn function_signatures() {
        let strings = b"\0long\0ssize_t\0kiocb\0iov_iter\0generic_file_buffered_read\0int\0unsigned long\0size_t\0folio_batch\0_Bool\0filemap_get_pages\0iocb\0".to_vec();
        let name = |s: &str| -> u32 {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .map(|p| p as u32 + 1)
                .unwrap()
        };
        let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
        let types = [
            // 1: long
            name("long"),
            info(KIND_INT, 0),
            8,
            1 << 24 | 64,
            // 2: typedef ssize_t
            name("ssize_t"),
            info(KIND_TYPEDEF, 0),
            1,
            // 3: struct kiocb (members elided), 4: pointer to it
            name("kiocb"),
            info(KIND_STRUCT, 0),
            48,
            0,
            info(KIND_PTR, 0),
            3,
            // 5: struct iov_iter, 6: const struct iov_iter, 7: pointer to that
            name("iov_iter"),
            info(KIND_STRUCT, 0),
            40,
            0,
            info(KIND_CONST, 0),
            5,
            0,
            info(KIND_PTR, 0),
            6,
            // 8: ssize_t (struct kiocb *, const struct iov_iter *, ssize_t)
            0,
            info(KIND_FUNC_PROTO, 3),
            2,
            name("iocb"),
            4,
            0,
            7,
            0,
            2,
            // 9: the function (linkage global)
            name("generic_file_buffered_read"),
            info(KIND_FUNC, 1),
            8,
            // 10: int, 11: unsigned long, 12: typedef size_t
            name("int"),
            info(KIND_INT, 0),
            4,
            1 << 24 | 32,
            name("unsigned long"),
            info(KIND_INT, 0),
            8,
            64,
            name("size_t"),
            info(KIND_TYPEDEF, 0),
            11,
            // 13: struct folio_batch, 14: pointer, 15: _Bool
            name("folio_batch"),
            info(KIND_STRUCT, 0),
            256,
            0,
            info(KIND_PTR, 0),
            13,
            name("_Bool"),
            info(KIND_INT, 0),
            1,
            1,
            // 16: int (struct kiocb *, size_t, struct folio_batch *, bool)
            0,
            info(KIND_FUNC_PROTO, 4),
            10,
            0,
            4,
            0,
            12,
            0,
            14,
            0,
            15,
            // 17: the function (linkage static)
            name("filemap_get_pages"),
            info(KIND_FUNC, 0),
            16,
        ];
        let btf = Btf::parse(&blob(&types, &strings)).unwrap();
        let read = btf.function("generic_file_buffered_read").unwrap();
        assert_eq!(
            read.params,
            [
                ValueType::PointerTo("kiocb".to_owned()),
                ValueType::PointerTo("iov_iter".to_owned()),
                ValueType::Int(8),
            ]
        );
        assert_eq!(read.ret, ValueType::Int(8));
        let get_pages = btf.function("filemap_get_pages").unwrap();
        assert_eq!(
            get_pages.params,
            [
                ValueType::PointerTo("kiocb".to_owned()),
                ValueType::Int(8),
                ValueType::PointerTo("folio_batch".to_owned()),
                ValueType::Int(1),
            ]
        );
        assert_eq!(get_pages.ret, ValueType::Int(4));
        assert!(matches!(
            btf.function("filemap_read"),
            Err(BtfError::NoFunction(_))
        ));
    }

    #[test]
    fn the_running_kernel_if_it_has_btf() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("no /sys/kernel/btf/vmlinux here: nothing to check");
            return;
        };
        let host = btf.member("address_space", "host").unwrap();
        assert_eq!(host.size, 8);
        assert_eq!(btf.member("inode", "i_size").unwrap().size, 8);
        assert_eq!(btf.member("super_block", "s_dev").unwrap().size, 4);
    }
}
