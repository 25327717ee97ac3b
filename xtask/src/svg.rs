//! Minimal SVG bar charts for docs/bench: grouped bars with optional spread whiskers.

use std::fmt::Write as _;

/// One bar: its value and, when known, the spread drawn as a whisker (low..high).
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub spread: Option<(f64, f64)>,
}

impl Bar {
    /// A bar without whiskers.
    pub fn plain(label: impl Into<String>, value: f64) -> Bar {
        Bar {
            label: label.into(),
            value,
            spread: None,
        }
    }
}

pub struct Group {
    pub label: String,
    pub bars: Vec<Bar>,
}

const COLORS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" axis maximum at or above `max`.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let exp = max.log10().floor();
    let base = 10f64.powf(exp);
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if base * step >= max {
            return base * step;
        }
    }
    base * 10.0
}

fn fmt_value(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Vertical grouped bar chart. Every group has the same series (bars), shown in a legend.
pub fn bar_chart(title: &str, y_label: &str, groups: &[Group], note: &str) -> String {
    let series: Vec<&str> = groups
        .first()
        .map(|g| g.bars.iter().map(|b| b.label.as_str()).collect())
        .unwrap_or_default();
    let bars_per_group = series.len().max(1);
    let bar_w = 26.0;
    let gap = 30.0;
    let longest_label = groups.iter().map(|g| g.label.len()).max().unwrap_or(0);
    let group_w = (bars_per_group as f64 * bar_w + gap).max(longest_label as f64 * 6.5 + 16.0);
    let (left, right, top, bottom) = (70.0, 20.0, 50.0, 90.0);
    let plot_w = (groups.len().max(1) as f64 * group_w).max(300.0);
    let plot_h = 260.0;
    let longest_note = note.lines().map(str::len).max().unwrap_or(0);
    let longest_series = series.iter().map(|name| name.len()).max().unwrap_or(0);
    let width = (left + plot_w + right + 40.0 + longest_series as f64 * 6.5)
        .max(left + longest_note as f64 * 6.2 + 20.0);
    let height = top + plot_h + bottom;
    let max = groups
        .iter()
        .flat_map(|g| g.bars.iter())
        .map(|b| b.spread.map_or(b.value, |(_, hi)| hi.max(b.value)))
        .fold(0.0f64, f64::max);
    let y_max = nice_max(max);
    let y = |v: f64| top + plot_h - (v.max(0.0) / y_max * plot_h);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{:.0}" y="22" font-size="14" font-weight="bold">{}</text>
"#,
        left,
        escape(title)
    );
    for i in 0..=5 {
        let v = y_max * f64::from(i) / 5.0;
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{:.0}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 6.0,
            yy + 4.0,
            fmt_value(v)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text transform="translate(16,{:.0}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        escape(y_label)
    );
    for (gi, group) in groups.iter().enumerate() {
        let gx = left + gi as f64 * group_w + (group_w - bars_per_group as f64 * bar_w) / 2.0;
        for (bi, bar) in group.bars.iter().enumerate() {
            let x = gx + bi as f64 * bar_w;
            let color = COLORS[bi % COLORS.len()];
            if bar.value.is_finite() {
                let yy = y(bar.value);
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}: {}</title></rect>"#,
                    bar_w - 4.0,
                    (top + plot_h - yy).max(0.0),
                    escape(&bar.label),
                    fmt_value(bar.value)
                );
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text>"#,
                    x + (bar_w - 4.0) / 2.0,
                    yy - 3.0,
                    fmt_value(bar.value)
                );
            } else {
                let _ = writeln!(
                    svg,
                    r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9" fill="#999">n/a</text>"##,
                    x + (bar_w - 4.0) / 2.0,
                    top + plot_h - 3.0
                );
            }
            if let Some((lo, hi)) = bar.spread {
                let cx = x + (bar_w - 4.0) / 2.0;
                let _ = writeln!(
                    svg,
                    r#"<line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="black"/><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="black"/><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="black"/>"#,
                    y(lo),
                    y(hi),
                    cx - 4.0,
                    cx + 4.0,
                    y(lo),
                    y(lo),
                    cx - 4.0,
                    cx + 4.0,
                    y(hi),
                    y(hi)
                );
            }
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + bars_per_group as f64 * bar_w / 2.0,
            top + plot_h + 16.0,
            escape(&group.label)
        );
    }
    let _ = writeln!(
        svg,
        r#"<line x1="{left}" x2="{left}" y1="{top}" y2="{:.0}" stroke="black"/><line x1="{left}" x2="{:.0}" y1="{:.0}" y2="{:.0}" stroke="black"/>"#,
        top + plot_h,
        left + plot_w,
        top + plot_h,
        top + plot_h
    );
    for (i, name) in series.iter().enumerate() {
        let ly = top + 10.0 + i as f64 * 18.0;
        let lx = left + plot_w + 15.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{lx:.0}" y="{:.0}" width="12" height="12" fill="{}"/><text x="{:.0}" y="{:.0}">{}</text>"#,
            ly - 10.0,
            COLORS[i % COLORS.len()],
            lx + 18.0,
            ly,
            escape(name)
        );
    }
    for (i, line) in note.lines().enumerate() {
        let _ = writeln!(
            svg,
            r##"<text x="{left}" y="{:.0}" fill="#555">{}</text>"##,
            top + plot_h + 40.0 + i as f64 * 14.0,
            escape(line)
        );
    }
    svg.push_str("</svg>\n");
    svg
}
