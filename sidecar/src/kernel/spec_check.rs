//! The built eBPF object against the tables userspace loads it by: every program the spec
//! names exists with the section of its hook, and every map and global the loader asks for
//! is there. Without this a rename shows only when the object is loaded, as root.

use aya_obj::{Object, ProgramSection};
use sidecar_common::{
    global_names, map_names,
    programs::{ALL_PROGRAMS, Hook},
};

use super::EBPF_OBJECT;

fn object() -> Object {
    Object::parse(EBPF_OBJECT).expect("the embedded eBPF object parses")
}

#[test]
fn every_program_of_the_spec_is_in_the_object_with_its_hook() {
    let object = object();
    let mut missing = Vec::new();
    for spec in ALL_PROGRAMS.iter().flat_map(|set| set.iter()) {
        let Some(program) = object.programs.get(spec.program) else {
            missing.push(format!("{} (none)", spec.program));
            continue;
        };
        let fits = match spec.hook {
            Hook::Tracepoint => matches!(program.section, ProgramSection::TracePoint),
            Hook::RawTracepoint => matches!(program.section, ProgramSection::RawTracePoint),
            Hook::FExit => matches!(program.section, ProgramSection::FExit { .. }),
            Hook::BtfTracepoint => matches!(program.section, ProgramSection::BtfTracePoint),
        };
        if !fits {
            missing.push(format!(
                "{} is {:?}, the spec attaches it as {}",
                spec.program,
                program.section,
                spec.hook.label()
            ));
        }
    }
    assert!(missing.is_empty(), "{missing:?}");
}

#[test]
fn every_map_the_loader_names_is_in_the_object() {
    let object = object();
    let pairs = [
        &map_names::FADVISE_COUNTS,
        &map_names::FADVISE_OVERFLOW,
        &map_names::PAGE_CACHE_COUNTS,
        &map_names::PAGE_CACHE_OVERFLOW,
        &map_names::RECLAIM_COUNTS,
        &map_names::RECLAIM_OVERFLOW,
        &map_names::HOST_COUNTERS,
        &map_names::PROCESSES,
    ];
    let names = pairs.iter().flat_map(|pair| pair.iter()).chain(&[
        map_names::EPOCH,
        map_names::FADVISE_IN_FLIGHT,
        map_names::READ_STATE,
        map_names::READ_IN_FLIGHT,
        map_names::RECLAIM_IN_FLIGHT,
        map_names::GAUGES,
        map_names::PROCESSES_SEEN,
    ]);
    let missing: Vec<_> = names
        .filter(|name| !object.maps.contains_key(**name))
        .collect();
    assert!(
        missing.is_empty(),
        "{missing:?} missing; the object has {:?}",
        object.maps.keys().collect::<Vec<_>>()
    );
}

/// Globals are symbols of `.rodata`; aya keeps the symbol table to itself, so the names are
/// looked up in the object's string table (NUL-terminated on both sides).
#[test]
fn every_global_the_loader_sets_is_in_the_object() {
    let globals = [
        global_names::FADVISE_LAYOUT,
        global_names::FILEMAP_LAYOUT,
        global_names::VMSCAN_LAYOUT,
        global_names::PROCESS_LAYOUT,
        global_names::PID_NAMESPACE,
        global_names::INODE_LAYOUT,
        global_names::READ_HOOK_LAYOUT,
        global_names::SYSCALL_READ_LAYOUT,
    ];
    let missing: Vec<_> = globals
        .into_iter()
        .filter(|name| {
            let symbol = [b"\0", name.as_bytes(), b"\0"].concat();
            !EBPF_OBJECT.windows(symbol.len()).any(|w| w == symbol)
        })
        .collect();
    assert!(missing.is_empty(), "{missing:?}");
}
