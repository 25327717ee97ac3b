//! Samples of a Prometheus text exposition (0.0.4 or OpenMetrics), for assertions and
//! measurements: comments and `# EOF` are skipped, `+Inf` is infinity, label values are
//! taken up to the next quote (the sidecar's values never contain one).

use std::collections::HashMap;

pub type Labels = Vec<(String, String)>;

#[derive(Debug, Default)]
pub struct Metrics {
    samples: HashMap<String, Vec<(Labels, f64)>>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples: HashMap<String, Vec<_>> = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                other => other.parse().unwrap_or(f64::NAN),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, Vec::new()),
            };
            samples
                .entry(name.to_owned())
                .or_default()
                .push((labels, value));
        }
        Metrics { samples }
    }

    /// The first sample of `name` whose labels include `labels` (others allowed); 0 when
    /// there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    /// The first sample of `name` whose labels include `labels` (others allowed).
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .get(name)?
            .iter()
            .find_map(|(have, value)| includes(have, labels).then_some(*value))
    }

    /// Sum over every sample of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples.get(name).map_or(0.0, |all| {
            all.iter()
                .filter(|(have, _)| includes(have, labels))
                .map(|(_, v)| v)
                .sum()
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples.contains_key(name)
    }
}

fn includes(have: &Labels, want: &[(&str, &str)]) -> bool {
    want.iter()
        .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
}

/// `a="x",b="y"` as pairs.
pub fn parse_labels(text: &str) -> Labels {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        labels.push((
            key.trim_start_matches(',').to_owned(),
            after[..end].to_owned(),
        ));
        rest = &after[end + 1..];
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x_total X.\n# TYPE x_total counter\n\
        x_total{workload=\"a\",advice=\"dontneed\"} 3\n\
        x_total{workload=\"b\",advice=\"dontneed\"} 4\n\
        x_total{workload=\"b\",advice=\"normal\"} 5\n\
        d_bucket{le=\"+Inf\"} +Inf\nplain 1.5\n# EOF\n";

    #[test]
    fn finds_sums_and_defaults() {
        let m = Metrics::parse(TEXT);
        assert_eq!(m.find("x_total", &[("workload", "b")]), Some(4.0));
        assert_eq!(m.sum("x_total", &[("workload", "b")]), 9.0);
        assert_eq!(m.sum("x_total", &[("advice", "dontneed")]), 7.0);
        assert_eq!(m.value("x_total", &[("workload", "c")]), 0.0);
        assert_eq!(m.find("plain", &[]), Some(1.5));
        assert_eq!(m.find("d_bucket", &[("le", "+Inf")]), Some(f64::INFINITY));
        assert!(m.has("plain") && !m.has("x"));
    }

    #[test]
    fn labels() {
        assert_eq!(
            parse_labels("a=\"1\",b=\"x y\""),
            vec![("a".into(), "1".into()), ("b".into(), "x y".into())]
        );
    }
}
