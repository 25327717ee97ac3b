//! What /proc says about processes and the memory manager.

use std::{collections::HashMap, fs, io};

/// Resident memory of a process, in KiB (`VmRSS` of /proc/PID/status); `None` when the
/// process is gone or is a kernel thread.
pub fn rss_kib(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The counters of /proc/vmstat.
pub fn vmstat() -> io::Result<HashMap<String, u64>> {
    Ok(fs::read_to_string("/proc/vmstat")?
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect())
}

/// Pages scanned and reclaimed by LRU shrinking, global and memcg reclaim alike, from
/// [`vmstat`]'s counters.
pub fn scan_steal(stat: &HashMap<String, u64>) -> (u64, u64) {
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    // The anon/file split exists from 5.8 on; before it, the same pages are counted by who
    // reclaimed them.
    if stat.contains_key("pgscan_file") {
        (
            get("pgscan_anon") + get("pgscan_file"),
            get("pgsteal_anon") + get("pgsteal_file"),
        )
    } else {
        (
            get("pgscan_kswapd") + get("pgscan_direct") + get("pgscan_khugepaged"),
            get("pgsteal_kswapd") + get("pgsteal_direct") + get("pgsteal_khugepaged"),
        )
    }
}

/// [`scan_steal`] of the counters now.
pub fn vmstat_scan_steal() -> io::Result<(u64, u64)> {
    Ok(scan_steal(&vmstat()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_rss_and_vmstat() {
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
        let stat = vmstat().expect("/proc/vmstat");
        assert!(stat.contains_key("nr_free_pages"));
    }

    #[test]
    fn scan_steal_with_and_without_the_split() {
        let split: HashMap<String, u64> = [
            ("pgscan_anon", 1),
            ("pgscan_file", 2),
            ("pgsteal_anon", 3),
            ("pgsteal_file", 4),
            ("pgscan_kswapd", 100),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(scan_steal(&split), (3, 7));
        let old: HashMap<String, u64> = [
            ("pgscan_kswapd", 1),
            ("pgscan_direct", 2),
            ("pgsteal_direct", 5),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(scan_steal(&old), (3, 5));
    }
}
