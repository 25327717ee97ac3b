//! A `GetMetrics` listing and its pages: the metrics sorted into one order, cut into pages
//! by tokens that name the last metric returned.

use crate::sync::Recover as _;
use std::{
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime},
};

use tonic::Status;

use super::service::{check_workloads, invalid};
use crate::{
    api::pb,
    metrics::{self, Family, Filter},
    status::Status as DaemonStatus,
    store::Store,
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

/// How long after the last unfiltered `GetMetrics` its listing is still built at every
/// drain. Past it, nobody lists everything, and building stops.
const KEEP_LISTING: Duration = Duration::from_secs(600);

/// The listings that requests cut their pages from. The unfiltered listing is built once
/// per drain, right after it and off the request path (`refresh`), as long as clients ask
/// for it: at 1,000 workloads collecting and sorting its 19,000 metrics takes milliseconds,
/// which the first call after each drain used to pay. A call that comes after a drain but
/// before its listing is built gets the previous drain's (its `collected_at` says so) rather
/// than wait or build it a second time: for those few milliseconds the listing is one drain
/// behind, never more. Without a refresh (none has run for the previous drain: nobody
/// listed, or tests that drive an `Api` alone) a call builds the listing itself, so it is
/// never older than that. Filtered listings are built on demand, and
/// the last one is kept for the pages that follow (one, so memory stays bounded whatever
/// the clients ask).
#[derive(Default)]
pub struct Listings {
    unfiltered: Mutex<Option<Arc<Listing>>>,
    /// The last drain `refresh` built the unfiltered listing of (or started to).
    refreshed: Mutex<Option<u64>>,
    last_unfiltered_call: Mutex<Option<Instant>>,
    filtered: Mutex<Option<Arc<Listing>>>,
}

impl std::fmt::Debug for Listings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let drain =
            |slot: &Mutex<Option<Arc<Listing>>>| slot.lock().recover().as_ref().map(|l| l.drain);
        f.debug_struct("Listings")
            .field("unfiltered_drain", &drain(&self.unfiltered))
            .field("filtered_drain", &drain(&self.filtered))
            .finish()
    }
}

impl Listings {
    /// The listing of `request` (whose filters hash to `fingerprint`) for the current drain.
    pub(super) fn get(
        &self,
        store: &RwLock<Store>,
        status: &DaemonStatus,
        request: &pb::GetMetricsRequest,
        fingerprint: u64,
    ) -> Result<Arc<Listing>, Status> {
        let unfiltered = request.modules.is_empty()
            && request.metric_names.is_empty()
            && request.workloads.is_empty();
        if unfiltered {
            *self.last_unfiltered_call.lock().recover() = Some(Instant::now());
        }
        let slot = if unfiltered {
            &self.unfiltered
        } else {
            &self.filtered
        };
        let drain = store.read().recover().drains();
        // The refresh is at work when it built the previous drain's listing: it builds this
        // drain's now or in a moment.
        let refreshing = unfiltered
            && self
                .refreshed
                .lock()
                .recover()
                .is_some_and(|r| r.saturating_add(1) >= drain);
        let cached = slot
            .lock()
            .recover()
            .as_ref()
            .filter(|l| {
                l.fingerprint == fingerprint
                    && (l.drain == drain || (refreshing && l.drain.saturating_add(1) == drain))
            })
            .cloned();
        if let Some(listing) = cached {
            return Ok(listing);
        }
        let listing = Arc::new(build(
            &crate::store::snapshot(store),
            status,
            request,
            fingerprint,
        )?);
        keep(slot, &listing);
        Ok(listing)
    }

    /// Builds the unfiltered listing of the drain just published, when a client asked for
    /// it within `KEEP_LISTING`.
    pub fn refresh(&self, store: &RwLock<Store>, status: &DaemonStatus) {
        let wanted = self
            .last_unfiltered_call
            .lock()
            .recover()
            .is_some_and(|at| at.elapsed() < KEEP_LISTING);
        if !wanted {
            return;
        }
        let request = pb::GetMetricsRequest::default();
        let fingerprint = fingerprint(&request);
        let store = crate::store::snapshot(store);
        *self.refreshed.lock().recover() = Some(store.drains());
        // An unfiltered request names no workload, so it cannot be refused.
        if let Ok(listing) = build(&store, status, &request, fingerprint) {
            keep(&self.unfiltered, &Arc::new(listing));
        }
    }
}

/// Stores `listing` in `slot` unless a newer drain's is there already.
fn keep(slot: &Mutex<Option<Arc<Listing>>>, listing: &Arc<Listing>) {
    let mut kept = slot.lock().recover();
    if kept.as_ref().is_none_or(|k| k.drain <= listing.drain) {
        *kept = Some(Arc::clone(listing));
    }
}

/// The hash of a request's filters that its page tokens carry.
pub(super) fn fingerprint(request: &pb::GetMetricsRequest) -> u64 {
    fnv1a(&[&request.modules, &request.metric_names, &request.workloads])
}

/// Collects and sorts the metrics `request` selects from `store`.
fn build(
    store: &Store,
    status: &DaemonStatus,
    request: &pb::GetMetricsRequest,
    fingerprint: u64,
) -> Result<Listing, Status> {
    let collected_at = SystemTime::now();
    check_workloads(store, &request.workloads)?;
    let filter = Filter {
        modules: request.modules.clone(),
        workloads: request.workloads.clone(),
    };
    let mut families = metrics::collect(store, status, &filter);
    if !request.metric_names.is_empty() {
        families.retain(|family| {
            let name = family.def.exposed_name();
            request.metric_names.iter().any(|p| glob(p, &name))
        });
    }
    let names: Vec<String> = families.iter().map(|f| f.def.exposed_name()).collect();
    let rows = sorted_rows(&families, &names);
    Ok(Listing {
        drain: store.drains(),
        fingerprint,
        collected_at,
        families,
        names,
        rows,
    })
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

    #[test]
    fn the_unfiltered_listing_is_built_at_the_drain_once_asked() {
        use crate::{
            config::Config, status::KernelFacts, store::Interval, workload::WorkloadNames,
        };
        let config = Config::parse("workloads:\n  - name: jobs\n    pids: [1]\n", "t").unwrap();
        let names = WorkloadNames::from_config(&config);
        let store = RwLock::new(Store::new(names.clone(), 10, true));
        let status = DaemonStatus::new(KernelFacts::default());
        let drain = || {
            let interval = Interval::empty(names.len(), SystemTime::now());
            crate::store::publish(&store, interval, Vec::new(), 1);
        };
        let listings = Listings::default();
        let request = pb::GetMetricsRequest::default();
        let print = fingerprint(&request);
        drain();
        // Nobody has listed: nothing is built at the drain.
        listings.refresh(&store, &status);
        assert!(listings.unfiltered.lock().unwrap().is_none());
        let first = listings.get(&store, &status, &request, print).unwrap();
        drain();
        listings.refresh(&store, &status);
        let built = listings.unfiltered.lock().unwrap().clone().unwrap();
        assert_eq!(built.drain, first.drain + 1);
        let next = listings.get(&store, &status, &request, print).unwrap();
        assert!(
            Arc::ptr_eq(&built, &next),
            "the call found the drain's listing built"
        );
        // A filtered call has its own listing and leaves the unfiltered one in place.
        let filtered = pb::GetMetricsRequest {
            modules: vec!["self".into()],
            ..Default::default()
        };
        let listing = listings
            .get(&store, &status, &filtered, fingerprint(&filtered))
            .unwrap();
        assert!(listing.rows.len() < next.rows.len());
        let kept = listings.unfiltered.lock().unwrap().clone().unwrap();
        assert!(Arc::ptr_eq(&built, &kept));
        // Between the next drain and its refresh, a call gets this listing: one drain
        // behind, never two.
        drain();
        let between = listings.get(&store, &status, &request, print).unwrap();
        assert!(Arc::ptr_eq(&built, &between));
        listings.refresh(&store, &status);
        let refreshed = listings.get(&store, &status, &request, print).unwrap();
        assert_eq!(refreshed.drain, built.drain + 1);
        drain();
        drain();
        let late = listings.get(&store, &status, &request, print).unwrap();
        assert_eq!(
            late.drain,
            built.drain + 3,
            "two drains without a refresh: built"
        );
    }
}
