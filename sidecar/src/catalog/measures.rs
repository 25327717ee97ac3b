//! The BanyanDB measures as the catalog declares them: each field, its old name, and its
//! value in a point, read by name.

use sidecar_common::Advice;

use super::{BanyanField, CATALOG, FamilyDef, Read, Source};
use crate::{
    kernel::modules::Module,
    store::{HostCounts, LatencyHistogram, WorkloadCounts},
};

/// What a BanyanDB point is about: one workload's deltas, or the host's.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    Workload(&'a WorkloadCounts),
    Host(&'a HostCounts),
}

/// One field of a BanyanDB measure, with the family it is written from.
#[derive(Clone, Debug)]
pub struct MeasureField {
    pub name: String,
    /// The name older sidecars gave the field.
    pub legacy: Option<String>,
    family: &'static FamilyDef,
    field: &'static BanyanField,
    advice: Option<Advice>,
}

impl PartialEq for MeasureField {
    fn eq(&self, other: &MeasureField) -> bool {
        self.name == other.name && self.legacy == other.legacy
    }
}

impl Eq for MeasureField {}

impl MeasureField {
    /// Whether a stored field of this name is this field.
    pub fn is_named(&self, name: &str) -> bool {
        self.name == name || self.legacy.as_deref() == Some(name)
    }

    /// The field's value in a point about `scope`; 0 where the field is about the other
    /// scope (a workload point's host counters, the host point's workload counts).
    pub fn value(&self, scope: Scope<'_>) -> u64 {
        match (self.family.source, scope, self.field.read) {
            (Source::Advice(read), Scope::Workload(counts), _) => self
                .advice
                .map_or(0, |advice| read(&counts.fadvise[advice as usize])),
            (Source::Workload(read), Scope::Workload(counts), _) => read(counts),
            (Source::Latency(histogram), Scope::Workload(counts), read) => {
                let histogram: &LatencyHistogram = histogram(counts);
                match read {
                    Read::Episodes | Read::Count => histogram.count,
                    Read::StalledNs => histogram.sum_ns,
                }
            }
            (Source::Host(read), Scope::Host(host), _) => read(host),
            _ => 0,
        }
    }
}

/// The fields of `module`'s measure, in their fixed order.
pub fn measure_fields(module: Module) -> Vec<MeasureField> {
    let mut fields: Vec<(usize, u8, MeasureField)> = Vec::new();
    for family in CATALOG.iter().filter(|f| f.module == module.name()) {
        for field in family.banyandb {
            if matches!(family.source, Source::Advice(_)) {
                for advice in Advice::ALL {
                    let prefix = advice.label();
                    fields.push((
                        advice as usize,
                        field.order,
                        MeasureField {
                            name: format!("{prefix}_{}", field.name),
                            legacy: field.legacy.map(|l| format!("{prefix}_{l}")),
                            family,
                            field,
                            advice: Some(advice),
                        },
                    ));
                }
            } else {
                fields.push((
                    0,
                    field.order,
                    MeasureField {
                        name: field.name.to_owned(),
                        legacy: field.legacy.map(str::to_owned),
                        family,
                        field,
                        advice: None,
                    },
                ));
            }
        }
    }
    fields.sort_by_key(|(advice, order, _)| (*advice, *order));
    fields.into_iter().map(|(_, _, field)| field).collect()
}

#[cfg(test)]
mod tests {
    use sidecar_common::ReclaimKind;

    use super::*;

    #[test]
    fn fields_read_their_scope_by_name() {
        let mut counts = WorkloadCounts::default();
        counts.page_cache.misses = 3;
        counts.fadvise[Advice::DontNeed as usize].successes = 2;
        counts.reclaim[ReclaimKind::Memcg as usize].record(5_000);
        let host = HostCounts {
            kswapd_wakeups: 4,
            ..HostCounts::default()
        };
        let value = |module, name: &str, scope| {
            measure_fields(module)
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.value(scope))
        };
        let workload = Scope::Workload(&counts);
        assert_eq!(value(Module::PageCache, "misses", workload), Some(3));
        assert_eq!(
            value(Module::Fadvise, "dontneed_successes", workload),
            Some(2)
        );
        assert_eq!(value(Module::Fadvise, "dontneed_calls", workload), Some(0));
        assert_eq!(
            value(Module::Vmscan, "memcg_reclaim_episodes", workload),
            Some(1)
        );
        assert_eq!(
            value(Module::Vmscan, "memcg_reclaim_stall_ns", workload),
            Some(5_000)
        );
        assert_eq!(value(Module::Vmscan, "kswapd_wakeups", workload), Some(0));
        assert_eq!(
            value(Module::Vmscan, "kswapd_wakeups", Scope::Host(&host)),
            Some(4)
        );
        assert_eq!(
            value(Module::Vmscan, "memcg_reclaim_episodes", Scope::Host(&host)),
            Some(0)
        );
    }
}
