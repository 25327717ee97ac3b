//! The results of a full run and their charts in docs/bench/.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use super::{
    drain::{DrainPoint, Syscalls},
    footprint::Footprint,
    overhead::{OPS, Overhead},
    scrape::ScrapePoint,
    setups::Setup,
    stats::{Stats, stats},
};
use crate::svg::{Bar, Group, bar_chart};

pub(super) fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub(super) struct Report {
    /// Hand-written reading of the results (docs/bench/notes.md), included as it is.
    pub(super) notes: PathBuf,
    pub(super) model: String,
    pub(super) cpus: usize,
    pub(super) kernel: String,
    pub(super) started_utc: String,
    pub(super) minutes: f64,
    pub(super) load: (String, String),
    pub(super) iters: u64,
    pub(super) o: Overhead,
    pub(super) drain: Vec<DrainPoint>,
    /// 10,000 long-lived processes, all active in every interval.
    pub(super) steady: Option<DrainPoint>,
    pub(super) syscalls: Option<Syscalls>,
    pub(super) scrape: Vec<ScrapePoint>,
    pub(super) fp: Footprint,
}

pub(super) fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("n/a".into(), |r| format!("{r:.2}"))
}

pub(super) fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

impl Report {
    pub(super) fn charts(&self, dir: &Path) -> Result<()> {
        let o = &self.o;
        let groups: Vec<Group> = OPS
            .iter()
            .enumerate()
            .map(|(oi, op)| Group {
                label: format!("{op} (added ns per call)"),
                bars: o
                    .setups
                    .iter()
                    .enumerate()
                    .skip(1)
                    .map(|(si, s)| {
                        let st = stats(&o.added[oi][si]);
                        Bar {
                            label: s.label().to_owned(),
                            value: st.median,
                            spread: Some((st.p25, st.p75)),
                        }
                    })
                    .collect(),
            })
            .collect();
        fs::write(
            dir.join("overhead.svg"),
            bar_chart(
                "Overhead per event: ns added to one call",
                "ns added per call",
                &groups,
                &format!(
                    "Median over {} interleaved rounds, minus the same round's untraced run; whiskers p25..p75.",
                    o.rounds_done
                ),
            ),
        )?;
        let drain_groups: Vec<Group> = self
            .drain
            .iter()
            .map(|p| Group {
                label: format!("{:.0} keys", p.entries),
                bars: vec![
                    Bar::plain("kernel drain, wall ms", p.duration_ms),
                    Bar::plain("epoch switch ms", p.switch_ms),
                    Bar::plain("drain thread CPU ms (all work)", p.cpu_ms),
                ],
            })
            .collect();
        fs::write(
            dir.join("drain.svg"),
            bar_chart(
                "Drain cost against keys drained at once",
                "milliseconds per drain",
                &drain_groups,
                &format!(
                    "{} CPUs. Kernel drain: sidecar_drain_duration_seconds. CPU: drain thread schedstat, incl. classification.",
                    self.cpus
                ),
            ),
        )?;
        let scrape_groups: Vec<Group> = self
            .scrape
            .iter()
            .map(|p| Group {
                label: format!("{} workloads", p.workloads),
                bars: vec![
                    Bar::plain("/metrics first", p.http_first),
                    Bar::plain("/metrics p50", p.http.median),
                    Bar::plain("/metrics p99", p.http_p99),
                    Bar::plain("GetMetrics page p50", p.page.median),
                    Bar::plain("GetMetrics page p99", p.page_p99),
                    Bar::plain("GetMetrics all p50", p.grpc.median),
                    Bar::plain("GetMetrics all p99", p.grpc_p99),
                    Bar::plain("GetStatus p50", p.status.median),
                ],
            })
            .collect();
        fs::write(
            dir.join("scrape.svg"),
            bar_chart(
                "Scrape and query latency",
                "milliseconds",
                &scrape_groups,
                "GetMetrics is timed through `sidecar query` (process start and connect included).",
            ),
        )?;
        let fp = &self.fp;
        fs::write(
            dir.join("footprint.svg"),
            bar_chart(
                "Daemon footprint",
                "MiB / % of one core",
                &[
                    Group {
                        label: "RSS (MiB)".into(),
                        bars: vec![
                            Bar::plain("idle", fp.idle_rss_kib as f64 / 1024.0),
                            Bar::plain("under load", fp.load_rss_kib as f64 / 1024.0),
                        ],
                    },
                    Group {
                        label: "CPU (% of a core)".into(),
                        bars: vec![
                            Bar::plain("idle", fp.idle_cpu_pct),
                            Bar::plain("under load", fp.load_cpu_pct),
                        ],
                    },
                ],
                "Targets: RSS < 30 MiB, idle CPU < 0.5% of a core. Interval 1 s.",
            ),
        )?;
        let si = o.setups.iter().position(|s| *s == Setup::SidecarStats);
        let self_groups: Vec<Group> = OPS
            .iter()
            .enumerate()
            .map(|(oi, op)| {
                let measured = si.map_or(Stats::default(), |si| stats(&o.added[oi][si]));
                let reported = stats(&o.self_reported[oi]);
                Group {
                    label: (*op).to_owned(),
                    bars: vec![
                        Bar {
                            label: "measured added ns/call".into(),
                            value: measured.median,
                            spread: Some((measured.p25, measured.p75)),
                        },
                        Bar {
                            label: "BPF stats ns/call".into(),
                            value: reported.median,
                            spread: Some((reported.p25, reported.p75)),
                        },
                    ],
                }
            })
            .collect();
        fs::write(
            dir.join("self-cost.svg"),
            bar_chart(
                "Self-reported cost vs measured",
                "ns per call",
                &self_groups,
                "BPF stats: run-time delta / runs delta over the loop's window, x runs per call (2 fadvise, 1 pread).",
            ),
        )?;
        Ok(())
    }
}
