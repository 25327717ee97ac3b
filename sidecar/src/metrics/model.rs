//! The samples a family holds, as every pull sink reads them.

use std::sync::Arc;

use crate::catalog::FamilyDef;

/// A sample's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Count(u64),
    Number(f64),
    /// Non-cumulative bucket counts by upper bound (the last is +Inf).
    Histogram {
        count: u64,
        sum: f64,
        buckets: Vec<(f64, u64)>,
    },
}

/// A label value. Shared, so that the same workload name in thousands of samples is one
/// allocation (a scrape at 1,000 workloads builds about 20,000 samples).
pub type LabelValue = Arc<str>;

/// A sample's labels, inline up to the two that per-workload families carry.
pub type Labels = smallvec::SmallVec<[(&'static str, LabelValue); 2]>;

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: Value,
}

#[derive(Debug)]
pub struct Family {
    pub def: &'static FamilyDef,
    pub samples: Vec<Sample>,
}

/// Which families and series to build.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Module names; empty means all (the daemon's own metrics are module `self`).
    pub modules: Vec<String>,
    pub workloads: Vec<String>,
}

impl Filter {
    pub fn module(&self, module: &str) -> bool {
        self.modules.is_empty() || self.modules.iter().any(|m| m == module)
    }

    pub fn workload(&self, workload: &str) -> bool {
        self.workloads.is_empty() || self.workloads.iter().any(|w| w == workload)
    }

    /// No filter at all: what /metrics serves unfiltered.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty() && self.workloads.is_empty()
    }
}
