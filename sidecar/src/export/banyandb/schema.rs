//! The schema the sidecar writes: one group (catalog MEASURE) and one measure per module,
//! entity (node, workload), one INT field per counter; and the check of an existing schema.

use std::time::Duration;

use super::proto::{common::v1 as common, database::v1 as database};
use crate::{
    catalog::{self, MeasureField},
    config::{BanyanDbConfig, IntervalUnit},
    kernel::modules::Module,
};

/// The tag family of the entity tags.
pub const TAG_FAMILY: &str = "default";
pub const NODE_TAG: &str = "node";
pub const WORKLOAD_TAG: &str = "workload";
/// The `workload` of host-wide points (vmscan's LRU and kswapd counters). Not a valid
/// workload name, so it cannot collide with one.
pub const HOST_WORKLOAD: &str = "(host)";

/// One measure: its module and its fields, in the order points carry them (the catalog's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeasureDef {
    pub module: Module,
    pub fields: Vec<MeasureField>,
}

impl MeasureDef {
    pub fn name(&self) -> &'static str {
        self.module.name()
    }

    pub fn for_module(module: Module) -> MeasureDef {
        MeasureDef {
            module,
            fields: catalog::measure_fields(module),
        }
    }

    /// The measure the sidecar creates.
    pub fn measure(&self, group: &str, interval: Duration) -> database::Measure {
        database::Measure {
            metadata: Some(metadata(group, self.name())),
            tag_families: vec![database::TagFamilySpec {
                name: TAG_FAMILY.to_owned(),
                tags: [NODE_TAG, WORKLOAD_TAG]
                    .map(|name| database::TagSpec {
                        name: name.to_owned(),
                        r#type: database::TagType::String.into(),
                    })
                    .to_vec(),
            }],
            fields: self
                .fields
                .iter()
                .map(|field| database::FieldSpec {
                    name: field.name.clone(),
                    field_type: database::FieldType::Int.into(),
                    encoding_method: database::EncodingMethod::Gorilla.into(),
                    compression_method: database::CompressionMethod::Zstd.into(),
                })
                .collect(),
            entity: Some(database::Entity {
                tag_names: vec![NODE_TAG.to_owned(), WORKLOAD_TAG.to_owned()],
            }),
            interval: interval_text(interval),
            ..Default::default()
        }
    }
}

/// The measures of these modules.
pub fn measures(modules: &[Module]) -> Vec<MeasureDef> {
    modules.iter().map(|&m| MeasureDef::for_module(m)).collect()
}

pub fn metadata(group: &str, name: &str) -> common::Metadata {
    common::Metadata {
        group: group.to_owned(),
        name: name.to_owned(),
        ..Default::default()
    }
}

/// BanyanDB's interval syntax: whole milliseconds, as "100ms" or "10s".
pub fn interval_text(interval: Duration) -> String {
    let ms = interval.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn rule(rule: crate::config::IntervalRule) -> common::IntervalRule {
    common::IntervalRule {
        unit: match rule.unit {
            IntervalUnit::Hour => common::interval_rule::Unit::Hour,
            IntervalUnit::Day => common::interval_rule::Unit::Day,
        }
        .into(),
        num: rule.num,
    }
}

/// The group the sidecar creates. BanyanDB names a group by `metadata.name` and leaves its
/// `metadata.group` empty (upstream `banyand/liaison/grpc/registry.go` keys groups by
/// `GetMetadata().GetName()`; `api/validate` rejects an empty name).
pub fn group(config: &BanyanDbConfig) -> common::Group {
    common::Group {
        metadata: Some(metadata("", &config.group.0)),
        catalog: common::Catalog::Measure.into(),
        resource_opts: Some(common::ResourceOpts {
            shard_num: config.shard_num.0,
            segment_interval: Some(rule(config.segment_interval)),
            ttl: Some(rule(config.ttl)),
            ..Default::default()
        }),
        updated_at: None,
    }
}

/// Where each value of a point goes in a stored measure's positional layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagSlot {
    Node,
    Workload,
    Null,
}

/// How to write points of one measure as the server stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub metadata: common::Metadata,
    /// Per stored tag family, per stored tag.
    pub tag_families: Vec<Vec<TagSlot>>,
    /// Per stored field: the index of our field, or `None` (written as null).
    pub fields: Vec<Option<usize>>,
}

/// Checks a stored measure against ours. Compatible means: entity exactly (node, workload),
/// both STRING tags, and every field of ours present as INT. Extra tags and fields are
/// written as null, so a schema extended by hand keeps working.
pub fn layout(def: &MeasureDef, stored: &database::Measure) -> Result<Layout, String> {
    let name = def.name();
    let entity = stored
        .entity
        .as_ref()
        .map(|e| e.tag_names.clone())
        .unwrap_or_default();
    if entity != [NODE_TAG, WORKLOAD_TAG] {
        return Err(format!(
            "measure {name:?} has entity {entity:?}, not [\"{NODE_TAG}\", \"{WORKLOAD_TAG}\"]"
        ));
    }
    let mut found = (false, false);
    let tag_families = stored
        .tag_families
        .iter()
        .map(|family| {
            family
                .tags
                .iter()
                .map(|tag| {
                    let slot = match tag.name.as_str() {
                        NODE_TAG => TagSlot::Node,
                        WORKLOAD_TAG => TagSlot::Workload,
                        _ => return Ok(TagSlot::Null),
                    };
                    if tag.r#type != database::TagType::String as i32 {
                        return Err(format!(
                            "measure {name:?}: tag {:?} has type {}, not STRING",
                            tag.name,
                            type_name(database::TagType::try_from(tag.r#type).ok())
                        ));
                    }
                    match slot {
                        TagSlot::Node => found.0 = true,
                        _ => found.1 = true,
                    }
                    Ok(slot)
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .collect::<Result<Vec<_>, String>>()?;
    if found != (true, true) {
        return Err(format!(
            "measure {name:?} lacks the STRING tags {NODE_TAG:?} and {WORKLOAD_TAG:?}"
        ));
    }
    let mut fields = Vec::with_capacity(stored.fields.len());
    let mut present = vec![false; def.fields.len()];
    for field in &stored.fields {
        // A field renamed since an older sidecar created the measure is still ours.
        let ours = def.fields.iter().position(|f| f.is_named(&field.name));
        if let Some(index) = ours {
            if field.field_type != database::FieldType::Int as i32 {
                return Err(format!(
                    "measure {name:?}: field {:?} is not INT",
                    field.name
                ));
            }
            present[index] = true;
        }
        fields.push(ours);
    }
    if let Some(missing) = present.iter().position(|p| !p) {
        return Err(format!(
            "measure {name:?} lacks the INT field {:?}",
            def.fields[missing].name
        ));
    }
    Ok(Layout {
        metadata: stored
            .metadata
            .clone()
            .unwrap_or_else(|| metadata("", name)),
        tag_families,
        fields,
    })
}

fn type_name(tag: Option<database::TagType>) -> &'static str {
    tag.map_or("UNKNOWN", |t| t.as_str_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_measure_is_compatible_with_itself() {
        for def in measures(&Module::ALL) {
            let mut measure = def.measure("g", Duration::from_millis(100));
            measure.metadata.as_mut().unwrap().mod_revision = 7;
            let layout = layout(&def, &measure).unwrap();
            assert_eq!(layout.metadata.mod_revision, 7);
            assert_eq!(
                layout.tag_families,
                vec![vec![TagSlot::Node, TagSlot::Workload]]
            );
            assert_eq!(
                layout.fields,
                (0..def.fields.len()).map(Some).collect::<Vec<_>>()
            );
            assert_eq!(measure.interval, "100ms");
        }
        assert_eq!(
            MeasureDef::for_module(Module::Fadvise).fields.len(),
            2 * sidecar_common::Advice::COUNT
        );
    }

    /// Points already spooled carry their values in this order, and measures created by
    /// older sidecars have these names: the catalog must keep both.
    #[test]
    fn the_field_order_and_the_old_names_hold() {
        let names = |module| -> Vec<String> {
            MeasureDef::for_module(module)
                .fields
                .iter()
                .map(|f| f.legacy.clone().unwrap_or_else(|| f.name.clone()))
                .collect()
        };
        let fadvise: Vec<String> = sidecar_common::Advice::ALL
            .iter()
            .flat_map(|a| {
                [
                    format!("{}_calls", a.label()),
                    format!("{}_successes", a.label()),
                ]
            })
            .collect();
        assert_eq!(names(Module::Fadvise), fadvise);
        assert_eq!(
            names(Module::PageCache),
            [
                "requested_pages",
                "missed_pages",
                "added_pages",
                "evicted_pages"
            ]
        );
        assert_eq!(
            names(Module::Vmscan),
            [
                "direct_reclaim_episodes",
                "direct_reclaim_stall_ns",
                "memcg_reclaim_episodes",
                "memcg_reclaim_stall_ns",
                "lru_pages_scanned",
                "lru_pages_reclaimed",
                "kswapd_wakeups",
            ]
        );
        let page_cache: Vec<String> = MeasureDef::for_module(Module::PageCache)
            .fields
            .iter()
            .map(|f| f.name.clone())
            .collect();
        assert_eq!(page_cache, ["read_attempts", "misses", "adds", "evictions"]);
    }

    /// A measure created by a sidecar before the renames is used as it is.
    #[test]
    fn a_measure_with_the_old_field_names_is_compatible() {
        let def = MeasureDef::for_module(Module::PageCache);
        let mut measure = def.measure("g", Duration::from_secs(1));
        for field in &mut measure.fields {
            let ours = def.fields.iter().find(|f| f.name == field.name).unwrap();
            field.name = ours.legacy.clone().unwrap();
        }
        // Stored in another order, with an extra field: laid out by name.
        measure.fields.swap(0, 3);
        let mut extra = measure.fields[0].clone();
        extra.name = "extra".to_owned();
        measure.fields.push(extra);
        let layout = layout(&def, &measure).unwrap();
        assert_eq!(layout.fields, [Some(3), Some(1), Some(2), Some(0), None]);
    }

    #[test]
    fn a_group_is_named_by_its_metadata_name() {
        let mut config = BanyanDbConfig::default();
        config.group.0 = "sidecar".to_owned();
        let md = group(&config).metadata.unwrap();
        assert_eq!((md.name.as_str(), md.group.as_str()), ("sidecar", ""));
        // A measure is named by its group plus its name.
        let measure =
            MeasureDef::for_module(Module::Fadvise).measure("sidecar", Duration::from_secs(1));
        let md = measure.metadata.unwrap();
        assert_eq!(
            (md.group.as_str(), md.name.as_str()),
            ("sidecar", "fadvise")
        );
    }

    #[test]
    fn incompatible_schemas_are_explained() {
        let def = MeasureDef::for_module(Module::PageCache);
        let mut measure = def.measure("g", Duration::from_secs(1));
        measure.fields[1].field_type = database::FieldType::String.into();
        let err = layout(&def, &measure).unwrap_err();
        assert!(err.contains("\"misses\" is not INT"), "{err}");
        let mut measure = def.measure("g", Duration::from_secs(1));
        measure.entity.as_mut().unwrap().tag_names.pop();
        assert!(layout(&def, &measure).unwrap_err().contains("entity"));
        let mut measure = def.measure("g", Duration::from_secs(1));
        measure.fields.remove(0);
        assert!(
            layout(&def, &measure)
                .unwrap_err()
                .contains("read_attempts")
        );
        // Extra fields and tags are fine: written as null.
        let mut measure = def.measure("g", Duration::from_secs(1));
        measure.fields.insert(0, measure.fields[0].clone());
        measure.fields[0].name = "extra".to_owned();
        let layout = layout(&def, &measure).unwrap();
        assert_eq!(layout.fields[0], None);
        assert_eq!(layout.fields[1], Some(0));
    }
}
