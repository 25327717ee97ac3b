//! The metric tables of README.md and docs/, generated from the catalog between marker
//! comments; a test fails when the files differ.

use super::{CATALOG, FamilyDef, SELF_MODULE, Source, measure_fields};
use crate::kernel::modules::Module;

/// Which families a generated docs table lists, and with which columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocsTable {
    /// The kernel modules' families: metric, type, unit, meaning (README.md).
    Modules,
    /// Every family with its module and BanyanDB fields (docs/operations.md).
    All,
    /// The BanyanDB exporter's own families (docs/banyandb.md).
    Exporter,
    /// The BanyanDB measures and their fields (docs/banyandb.md).
    Measures,
}

impl DocsTable {
    pub const ALL: [DocsTable; 4] = [
        DocsTable::Modules,
        DocsTable::All,
        DocsTable::Exporter,
        DocsTable::Measures,
    ];

    /// The marker name between `<!-- BEGIN generated: NAME -->` and `<!-- END ... -->`.
    pub const fn marker(self) -> &'static str {
        match self {
            DocsTable::Modules => "metrics-modules",
            DocsTable::All => "metrics-all",
            DocsTable::Exporter => "metrics-exporter",
            DocsTable::Measures => "banyandb-measures",
        }
    }
}

fn sample_name(def: &FamilyDef) -> String {
    let name = def.exposed_name();
    if def.labels.is_empty() {
        format!("`{name}`")
    } else {
        format!("`{name}{{{}}}`", def.labels.join(","))
    }
}

fn unit(def: &FamilyDef) -> &'static str {
    if def.unit.is_empty() { "" } else { def.unit }
}

/// A Markdown table of the catalog (the text between the markers).
pub fn docs_table(table: DocsTable) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    match table {
        DocsTable::Modules | DocsTable::Exporter => {
            out.push_str("| metric | type | unit | meaning |\n|---|---|---|---|\n");
            let wanted = |def: &FamilyDef| match table {
                DocsTable::Modules => def.module != SELF_MODULE,
                _ => def.name.starts_with("sidecar_export_"),
            };
            for def in CATALOG.iter().filter(|d| wanted(d)) {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    sample_name(def),
                    def.kind.label(),
                    unit(def),
                    def.help
                );
            }
        }
        DocsTable::All => {
            out.push_str(
                "| metric | type | unit | module | meaning | BanyanDB field |\n|---|---|---|---|---|---|\n",
            );
            for def in CATALOG {
                let fields: Vec<String> = def
                    .banyandb
                    .iter()
                    .map(|f| {
                        let advice = if matches!(def.source, Source::Advice(_)) {
                            "<advice>_"
                        } else {
                            ""
                        };
                        format!("`{}.{advice}{}`", def.module, f.name)
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | `{}` | {} | {} |",
                    sample_name(def),
                    def.kind.label(),
                    unit(def),
                    def.module,
                    def.help,
                    fields.join(", ")
                );
            }
        }
        DocsTable::Measures => {
            out.push_str("| measure | fields (INT, per interval, in this order) | accepted old names |\n|---|---|---|\n");
            for module in Module::ALL {
                let fields = measure_fields(module);
                let names: Vec<String> = fields.iter().map(|f| format!("`{}`", f.name)).collect();
                let legacy: Vec<String> = fields
                    .iter()
                    .filter_map(|f| Some(format!("`{}` for `{}`", f.legacy.as_ref()?, f.name)))
                    .collect();
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} |",
                    module.name(),
                    names.join(", "),
                    legacy.join(", ")
                );
            }
        }
    }
    out
}

/// `text` with the generated block of `table` replaced; `None` without its markers.
pub fn with_docs_table(text: &str, table: DocsTable) -> Option<String> {
    let begin = format!(
        "<!-- BEGIN generated: {} (sidecar/src/catalog/mod.rs) -->\n",
        table.marker()
    );
    let end = format!("<!-- END generated: {} -->", table.marker());
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    Some(format!(
        "{}{}{}",
        &text[..start],
        docs_table(table),
        &text[stop..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files whose metric tables are generated, and the tables each holds.
    const DOCS: [(&str, &[DocsTable]); 3] = [
        ("README.md", &[DocsTable::Modules]),
        ("docs/operations.md", &[DocsTable::All]),
        (
            "docs/banyandb.md",
            &[DocsTable::Measures, DocsTable::Exporter],
        ),
    ];

    /// The docs list what the catalog declares. `UPDATE_DOCS=1` rewrites the tables.
    #[test]
    fn the_docs_tables_match_the_catalog() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut stale = Vec::new();
        for (file, tables) in DOCS {
            let path = root.join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let mut generated = text.clone();
            for &table in tables {
                generated = with_docs_table(&generated, table).unwrap_or_else(|| {
                    panic!("{file} lacks the markers of the {} table", table.marker())
                });
            }
            if generated != text {
                if std::env::var_os("UPDATE_DOCS").is_some() {
                    std::fs::write(&path, generated).unwrap();
                } else {
                    stale.push(file);
                }
            }
        }
        assert!(
            stale.is_empty(),
            "{stale:?} differ from the catalog: run `UPDATE_DOCS=1 cargo test -p sidecar --lib catalog`"
        );
    }
}
