//! The Prometheus exposition of the families: OpenMetrics text through prometheus-client,
//! or the Prometheus text format 0.0.4 for scrapers that do not ask for OpenMetrics (the
//! two differ only in counter descriptors, see `encode_families`).

use crate::sync::Recover as _;
use std::{
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};

use super::{
    collect::{Part, collect, collect_part},
    model::{Family, Filter, Value},
};
use crate::{catalog::Kind, status::Status, store::Store};

/// One family, as prometheus-client sees it.
struct Exposition(Family);

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposition")
            .field("family", &self.0.def.name)
            .field("samples", &self.0.samples.len())
            .finish()
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let family = &self.0;
        let def = family.def;
        let kind = match def.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        let mut metric = encoder.encode_descriptor(def.name, def.help, None, kind)?;
        let mut labels: Vec<(&str, &str)> = Vec::new();
        for sample in &family.samples {
            labels.clear();
            labels.extend(sample.labels.iter().map(|(k, v)| (*k, &**v)));
            if labels.is_empty() {
                encode_value(&mut metric, def.kind, &sample.value)?;
            } else {
                encode_value(
                    &mut metric.encode_family(&labels.as_slice())?,
                    def.kind,
                    &sample.value,
                )?;
            }
        }
        Ok(())
    }
}

fn encode_value(
    target: &mut prometheus_client::encoding::MetricEncoder<'_>,
    kind: Kind,
    value: &Value,
) -> Result<(), std::fmt::Error> {
    match (kind, value) {
        (Kind::Counter, Value::Count(v)) => target.encode_counter::<NoLabelSet, _, u64>(v, None),
        (Kind::Counter, Value::Number(v)) => target.encode_counter::<NoLabelSet, _, f64>(v, None),
        (_, Value::Count(v)) => target.encode_gauge(&(*v as f64)),
        (_, Value::Number(v)) => target.encode_gauge(v),
        (
            _,
            Value::Histogram {
                count,
                sum,
                buckets,
            },
        ) => target.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None),
    }
}

/// The exposition's size last time, so that the next one is allocated once.
static LAST_SIZE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(16 * 1024);

/// Encodes the filtered families as OpenMetrics text (ending with `# EOF`) or, with
/// `openmetrics` false, the Prometheus text format 0.0.4.
pub fn encode(
    store: &Arc<RwLock<Store>>,
    status: &Arc<Status>,
    filter: &Filter,
    openmetrics: bool,
) -> Result<String, std::fmt::Error> {
    use std::sync::atomic::Ordering;
    // Collected from a snapshot: the drain never waits for a scrape.
    let families = collect(&crate::store::snapshot(store), status, filter);
    let mut out = String::with_capacity(LAST_SIZE.load(Ordering::Relaxed) + 4096);
    encode_families(families, openmetrics, &mut out)?;
    if openmetrics {
        prometheus_client::encoding::text::encode_eof(&mut out)?;
    }
    LAST_SIZE.store(out.len(), Ordering::Relaxed);
    Ok(out)
}

/// Appends `families` to `out`, without the OpenMetrics `# EOF`.
///
/// prometheus-client writes OpenMetrics. The two formats differ only in a counter
/// family's descriptor (0.0.4 names the family `x_total`, as its samples are named), the
/// `# UNIT` lines (never written: no family has a unit) and `# EOF`. So each family is
/// encoded on its own and, for 0.0.4, a counter's two descriptor lines are written here
/// instead of prometheus-client's; samples are written as they are.
fn encode_families(
    families: Vec<Family>,
    openmetrics: bool,
    out: &mut String,
) -> Result<(), std::fmt::Error> {
    use std::fmt::Write as _;
    for family in families {
        let def = family.def;
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exposition(family)));
        if openmetrics || def.kind != Kind::Counter {
            prometheus_client::encoding::text::encode_registry(out, &registry)?;
            continue;
        }
        let name = def.exposed_name();
        writeln!(out, "# HELP {name} {}", def.help)?;
        writeln!(out, "# TYPE {name} counter")?;
        let mut samples = SkipLines { out, lines: 2 };
        prometheus_client::encoding::text::encode_registry(&mut samples, &registry)?;
    }
    Ok(())
}

/// How long after the last unfiltered scrape in a format its text is still rendered at
/// every drain. Past it, nobody is scraping that format, and rendering stops.
const KEEP_RENDERING: Duration = Duration::from_secs(600);

/// The store's families as text, rendered once per drain for each format that scrapers
/// ask for. The store changes only at a drain, so every scrape between two drains would
/// encode the same text; at 1,000 workloads that is about 19,000 series and milliseconds
/// of work per scrape. Rendering happens after each drain (`refresh`), off the request
/// path; a scrape that arrives before it renders the text itself. The daemon's status
/// families (exporter counters, module states) change at any time and are encoded at
/// every scrape. Filtered scrapes are encoded on demand.
#[derive(Debug, Default)]
pub struct ExpositionCache {
    /// Indexed by `openmetrics as usize`.
    formats: [Mutex<Rendered>; 2],
}

#[derive(Debug, Default)]
struct Rendered {
    /// The drain the text is of.
    drain: Option<u64>,
    text: Arc<String>,
    last_asked: Option<Instant>,
}

impl ExpositionCache {
    /// The unfiltered exposition in one format.
    pub fn scrape(
        &self,
        store: &Arc<RwLock<Store>>,
        status: &Arc<Status>,
        openmetrics: bool,
    ) -> Result<String, std::fmt::Error> {
        let slot = &self.formats[usize::from(openmetrics)];
        let drain = store.read().recover().drains();
        let cached = {
            let mut rendered = slot.lock().recover();
            rendered.last_asked = Some(Instant::now());
            (rendered.drain == Some(drain)).then(|| Arc::clone(&rendered.text))
        };
        let text = match cached {
            Some(text) => text,
            None => render(slot, store, status, openmetrics)?,
        };
        let status_families = collect_part(
            &crate::store::snapshot(store),
            status,
            &Filter::default(),
            Part::Status,
        );
        let mut out = String::with_capacity(text.len() + 8 * 1024);
        out.push_str(&text);
        encode_families(status_families, openmetrics, &mut out)?;
        if openmetrics {
            prometheus_client::encoding::text::encode_eof(&mut out)?;
        }
        Ok(out)
    }

    /// Renders, after a drain, the formats scraped within `KEEP_RENDERING`.
    pub fn refresh(&self, store: &Arc<RwLock<Store>>, status: &Arc<Status>) {
        for (index, slot) in self.formats.iter().enumerate() {
            let wanted = slot
                .lock()
                .recover()
                .last_asked
                .is_some_and(|at| at.elapsed() < KEEP_RENDERING);
            if wanted {
                // Encoding into a String cannot fail; a failure would leave the old text,
                // which a scrape then replaces.
                let _ = render(slot, store, status, index == 1);
            }
        }
    }
}

/// Encodes the store's families of the current drain into `slot`, unless a newer text is
/// already there.
fn render(
    slot: &Mutex<Rendered>,
    store: &Arc<RwLock<Store>>,
    status: &Arc<Status>,
    openmetrics: bool,
) -> Result<Arc<String>, std::fmt::Error> {
    let (drain, families) = {
        let store = crate::store::snapshot(store);
        let families = collect_part(&store, status, &Filter::default(), Part::Store);
        (store.drains(), families)
    };
    let mut text = String::with_capacity(slot.lock().map_or(0, |r| r.text.len()) + 4096);
    encode_families(families, openmetrics, &mut text)?;
    let text = Arc::new(text);
    let mut rendered = slot.lock().recover();
    if rendered.drain.is_none_or(|d| d < drain) {
        rendered.drain = Some(drain);
        rendered.text = Arc::clone(&text);
    }
    Ok(text)
}

/// Appends what is written to `out`, except the first `lines` lines (prometheus-client's
/// OpenMetrics descriptor of a counter family, replaced by the 0.0.4 one).
struct SkipLines<'a> {
    out: &'a mut String,
    lines: usize,
}

impl std::fmt::Write for SkipLines<'_> {
    fn write_str(&mut self, mut text: &str) -> std::fmt::Result {
        while self.lines > 0 {
            match text.split_once('\n') {
                Some((_, rest)) => {
                    self.lines -= 1;
                    text = rest;
                }
                None => return Ok(()),
            }
        }
        self.out.push_str(text);
        Ok(())
    }
}
