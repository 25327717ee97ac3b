//! A `GetMetrics` listing and its pages: the metrics sorted into one order, cut into pages
//! by tokens that name the last metric returned.

use std::time::SystemTime;

use tonic::Status;

use super::{
    Api,
    service::{check_workloads, invalid},
};
use crate::{
    api::pb,
    metrics::{self, Family, Filter},
};

/// One drain's metrics for one set of filters, sorted into the listing's order. The pages of
/// a listing are cut from it while it is the latest drain's: paging through 19,000 metrics
/// collects and sorts them once, not once per page, and every page comes from one drain.
pub(super) struct Listing {
    pub(super) drain: u64,
    pub(super) fingerprint: u64,
    pub(super) collected_at: SystemTime,
    pub(super) families: Vec<Family>,
    pub(super) names: Vec<String>,
    pub(super) rows: Vec<Row>,
}

impl Api {
    /// Collects and sorts the metrics `request` selects, from the current drain.
    pub(super) fn list(
        &self,
        request: &pb::GetMetricsRequest,
        fingerprint: u64,
    ) -> Result<Listing, Status> {
        let collected_at = SystemTime::now();
        let (drain, mut families) = {
            let store = self.read_store();
            check_workloads(&store, &request.workloads)?;
            let filter = Filter {
                modules: request.modules.clone(),
                workloads: request.workloads.clone(),
            };
            (
                store.drains(),
                metrics::collect(&store, &self.status, &filter),
            )
        };
        if !request.metric_names.is_empty() {
            families.retain(|family| {
                let name = family.def.exposed_name();
                request.metric_names.iter().any(|p| glob(p, &name))
            });
        }
        let names: Vec<String> = families.iter().map(|f| f.def.exposed_name()).collect();
        let rows = sorted_rows(&families, &names);
        Ok(Listing {
            drain,
            fingerprint,
            collected_at,
            families,
            names,
            rows,
        })
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub(super) fn glob(pattern: &str, name: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == name;
    };
    let Some(mut remaining) = name.strip_prefix(head) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('*').collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return remaining.ends_with(part);
        }
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// A stable 64-bit FNV-1a hash (page tokens must survive across calls, not processes).
pub(super) fn fnv1a(parts: &[&[String]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for list in parts {
        for item in *list {
            for byte in item.bytes().chain(std::iter::once(0xff)) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash ^= 0xfe;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Page tokens name the last metric returned (keyset pagination): metrics that appear or
/// disappear between pages (rate gauges) cannot shift the others, so every metric present
/// throughout is returned exactly once. The filter fingerprint rejects a token reused with
/// other filters.
pub(super) fn encode_token(fingerprint: u64, last_key: &str) -> String {
    format!("v1.{fingerprint:016x}.{}", hex(last_key.as_bytes()))
}

pub(super) fn decode_token(token: &str, fingerprint: u64) -> Result<String, Status> {
    let bad = |why: &str| invalid("page_token", why);
    let mut parts = token.splitn(3, '.');
    let (Some("v1"), Some(print), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("not a token this server issued"));
    };
    if u64::from_str_radix(print, 16).ok() != Some(fingerprint) {
        return Err(bad("issued for other filters"));
    }
    unhex(key)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| bad("not a token this server issued"))
}

/// One sample of the listing: its sort key (what page tokens carry) and where it is.
pub(super) struct Row {
    pub(super) key: String,
    pub(super) family: usize,
    pub(super) sample: usize,
}

/// Every sample of `families`, in the listing's order (by name, then sorted labels). Only
/// the keys are built here: a page turns just its own rows into messages.
pub(super) fn sorted_rows(families: &[Family], names: &[String]) -> Vec<Row> {
    let mut rows = Vec::with_capacity(families.iter().map(|f| f.samples.len()).sum());
    let mut labels: Vec<(&str, &str)> = Vec::new();
    for (family_index, (family, name)) in families.iter().zip(names).enumerate() {
        for (sample_index, sample) in family.samples.iter().enumerate() {
            labels.clear();
            labels.extend(sample.labels.iter().map(|(k, v)| (*k, &**v)));
            labels.sort_unstable();
            let mut key = String::with_capacity(name.len() + 48);
            key.push_str(name);
            for (k, v) in &labels {
                key.push('\u{1f}');
                key.push_str(k);
                key.push('=');
                key.push_str(v);
            }
            rows.push(Row {
                key,
                family: family_index,
                sample: sample_index,
            });
        }
    }
    rows.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("ebpf_cache_*", "ebpf_cache_misses_total"));
        assert!(glob("*_total", "ebpf_cache_misses_total"));
        assert!(glob("ebpf_*_misses_*", "ebpf_cache_misses_total"));
        assert!(glob("ebpf_cache_misses_total", "ebpf_cache_misses_total"));
        assert!(!glob("ebpf_cache_misses", "ebpf_cache_misses_total"));
        assert!(!glob("x*", "ebpf"));
        assert!(glob("*", "anything"));
    }

    #[test]
    fn tokens_round_trip_and_reject_other_filters() {
        let token = encode_token(42, "ebpf_x\u{1f}workload=a");
        assert_eq!(decode_token(&token, 42).unwrap(), "ebpf_x\u{1f}workload=a");
        assert!(decode_token(&token, 43).is_err());
        assert!(decode_token("garbage", 42).is_err());
        assert!(decode_token("v1.000000000000002a.zz", 42).is_err());
    }
}
