//! BanyanDB's rules, each taken from upstream's code (apache/skywalking-banyandb, tag
//! v0.10.3, commit 951e00e85b47) and cited beside it. Paths are relative to that repository.
//!
//! How upstream's errors reach a client (`banyand/liaison/grpc/server.go`, `Serve`): the
//! protoc-gen-validate interceptor runs first and answers InvalidArgument for any
//! `(validate.rules)` violation; the handlers' plain Go errors (`errors.New`, `fmt.Errorf`),
//! such as those of `api/validate/validate.go`, reach the client as gRPC Unknown; the
//! sentinels of `banyand/metadata/schema/error.go` carry NotFound and AlreadyExists.
//! Since v0.10.0 the schema registry runs in "property" mode by default
//! (`banyand/metadata/client.go`, flag `schema-registry-mode`), so the registry rules below
//! are those of `banyand/metadata/schema/property/client.go`.

use sidecar::export::banyandb::proto::{
    common::v1 as common, database::v1 as database, measure::v1 as measure, model::v1 as model,
};
use tonic::Status;

/// `banyand/metadata/schema/error.go`: `statusGRPCAlreadyExists`.
pub fn already_exists() -> Status {
    Status::already_exists("banyandb: resource already exists")
}

/// `banyand/metadata/schema/error.go`: `statusGRPCResourceNotFound`, returned by
/// `getResource` (`property/client.go`) for a missing group or measure.
pub fn not_found() -> Status {
    Status::not_found("banyandb: resource not found")
}

/// A plain Go error from a handler: gRPC Unknown with the error's text.
pub fn plain_error(text: impl Into<String>) -> Status {
    Status::unknown(text.into())
}

/// protoc-gen-validate's answer (go-grpc-middleware's validator interceptor).
fn pgv(message: &str, field: &str, rule: &str) -> Status {
    Status::invalid_argument(format!("invalid {message}.{field}: {rule}"))
}

/// `enum.defined_only`: the value is one of the enum's (0, UNSPECIFIED, passes).
fn defined<E: TryFrom<i32>>(value: i32) -> bool {
    E::try_from(value).is_ok()
}

/// PGV on `common.v1.IntervalRule` (`api/proto/banyandb/common/v1/common.proto`:
/// `unit` defined_only, `num` gt 0), checked when the message is present.
fn pgv_interval_rule(rule: Option<&common::IntervalRule>, field: &str) -> Result<(), Status> {
    let Some(rule) = rule else { return Ok(()) };
    if !defined::<common::interval_rule::Unit>(rule.unit) {
        return Err(pgv(
            "IntervalRule",
            "Unit",
            &format!("{field}: value must be one of the defined enum values"),
        ));
    }
    if rule.num == 0 {
        return Err(pgv(
            "IntervalRule",
            "Num",
            &format!("{field}: value must be greater than 0"),
        ));
    }
    Ok(())
}

/// PGV on `common.v1.Group` (`common.proto`: `metadata` required; `ResourceOpts.shard_num`
/// gt 0; the interval rules above; stage rules).
pub fn pgv_group(group: Option<&common::Group>) -> Result<&common::Group, Status> {
    // The request wrapper has no rule; a nil group panics in the handler at
    // `req.Group.Metadata`, which the recovery interceptor turns into Internal.
    let group = group.ok_or_else(|| Status::internal("runtime error: nil pointer dereference"))?;
    if group.metadata.is_none() {
        return Err(pgv("Group", "Metadata", "value is required"));
    }
    if let Some(opts) = &group.resource_opts {
        if opts.shard_num == 0 {
            return Err(pgv(
                "ResourceOpts",
                "ShardNum",
                "value must be greater than 0",
            ));
        }
        pgv_interval_rule(opts.segment_interval.as_ref(), "segment_interval")?;
        pgv_interval_rule(opts.ttl.as_ref(), "ttl")?;
        for stage in &opts.stages {
            if stage.name.is_empty() || stage.node_selector.is_empty() {
                return Err(pgv(
                    "LifecycleStage",
                    "Name",
                    "value length must be at least 1 runes",
                ));
            }
            if stage.shard_num == 0 {
                return Err(pgv(
                    "LifecycleStage",
                    "ShardNum",
                    "value must be greater than 0",
                ));
            }
            if stage.segment_interval.is_none() || stage.ttl.is_none() {
                return Err(pgv(
                    "LifecycleStage",
                    "SegmentInterval",
                    "value is required",
                ));
            }
        }
    }
    Ok(group)
}

/// `api/validate/validate.go`, `Group`, called by `SchemaRegistry.CreateGroup` and
/// `UpdateGroup` (`property/client.go`): plain errors, so gRPC Unknown. A group is named by
/// `metadata.name`; its `metadata.group` is not looked at.
pub fn validate_group(group: &common::Group) -> Result<(), Status> {
    let name = group.metadata.as_ref().map_or("", |m| m.name.as_str());
    if name.is_empty() {
        return Err(plain_error("metadata.name is required"));
    }
    if group.catalog == common::Catalog::Unspecified as i32 {
        return Err(plain_error("catalog is unspecified"));
    }
    if group.catalog == common::Catalog::Property as i32 {
        let Some(opts) = &group.resource_opts else {
            return Err(plain_error("resourceOpts is nil"));
        };
        if opts.shard_num == 0 {
            return Err(plain_error("shardNum is invalid"));
        }
        if opts.segment_interval.is_some() {
            return Err(plain_error("segmentInterval should be nil"));
        }
        if opts.ttl.is_some() {
            return Err(plain_error("ttl should be nil"));
        }
        return Ok(());
    }
    group_for_non_property(group)
}

/// `api/validate/validate.go`, `GroupForNonProperty`: what a STREAM, MEASURE or TRACE group
/// needs; also checked on a measure's group when the measure is created
/// (`property/client.go`, `validateGroup`).
pub fn group_for_non_property(group: &common::Group) -> Result<(), Status> {
    let Some(opts) = &group.resource_opts else {
        return Err(plain_error("group resourceOpts is nil"));
    };
    if opts.shard_num == 0 {
        return Err(plain_error("group shardNum is invalid"));
    }
    let Some(segment) = &opts.segment_interval else {
        return Err(plain_error("group segmentInterval is nil"));
    };
    if segment.num == 0 {
        return Err(plain_error("group segmentInterval num is invalid"));
    }
    if segment.unit == common::interval_rule::Unit::Unspecified as i32 {
        return Err(plain_error("group segmentInterval unit is unspecified"));
    }
    let Some(ttl) = &opts.ttl else {
        return Err(plain_error("group ttl is nil"));
    };
    if ttl.num == 0 {
        return Err(plain_error("group ttl num is invalid"));
    }
    if ttl.unit == common::interval_rule::Unit::Unspecified as i32 {
        return Err(plain_error("group ttl unit is unspecified"));
    }
    Ok(())
}

/// PGV on `database.v1.Measure` (`api/proto/banyandb/database/v1/schema.proto`: metadata
/// required; tag_families min_items 1; a family's name min_len 1 and tags min_items 1; a
/// tag's name min_len 1 and type defined_only; entity required with tag_names min_items 1;
/// a field's name min_len 1 and its enums defined_only).
pub fn pgv_measure(m: Option<&database::Measure>) -> Result<&database::Measure, Status> {
    // A nil measure panics in the handler at `req.Measure.Metadata` (registry.go): Internal.
    let m = m.ok_or_else(|| Status::internal("runtime error: nil pointer dereference"))?;
    if m.metadata.is_none() {
        return Err(pgv("Measure", "Metadata", "value is required"));
    }
    if m.tag_families.is_empty() {
        return Err(pgv(
            "Measure",
            "TagFamilies",
            "value must contain at least 1 item(s)",
        ));
    }
    for family in &m.tag_families {
        if family.name.is_empty() {
            return Err(pgv(
                "TagFamilySpec",
                "Name",
                "value length must be at least 1 runes",
            ));
        }
        if family.tags.is_empty() {
            return Err(pgv(
                "TagFamilySpec",
                "Tags",
                "value must contain at least 1 item(s)",
            ));
        }
        for tag in &family.tags {
            if tag.name.is_empty() {
                return Err(pgv(
                    "TagSpec",
                    "Name",
                    "value length must be at least 1 runes",
                ));
            }
            if !defined::<database::TagType>(tag.r#type) {
                return Err(pgv(
                    "TagSpec",
                    "Type",
                    "value must be one of the defined enum values",
                ));
            }
        }
    }
    match &m.entity {
        None => return Err(pgv("Measure", "Entity", "value is required")),
        Some(entity) if entity.tag_names.is_empty() => {
            return Err(pgv(
                "Entity",
                "TagNames",
                "value must contain at least 1 item(s)",
            ));
        }
        Some(_) => {}
    }
    for field in &m.fields {
        if field.name.is_empty() {
            return Err(pgv(
                "FieldSpec",
                "Name",
                "value length must be at least 1 runes",
            ));
        }
        let enums_defined = defined::<database::FieldType>(field.field_type)
            && defined::<database::EncodingMethod>(field.encoding_method)
            && defined::<database::CompressionMethod>(field.compression_method);
        if !enums_defined {
            return Err(pgv(
                "FieldSpec",
                "FieldType",
                "value must be one of the defined enum values",
            ));
        }
    }
    Ok(m)
}

/// `property/client.go`, `CreateMeasure`/`UpdateMeasure`: a non-empty `interval` must parse
/// with `pkg/timestamp/duration.go` `ParseDuration` (Go durations, or whole days "<n>d").
pub fn check_interval(interval: &str) -> Result<(), Status> {
    if interval.is_empty() || parse_go_duration(interval).is_some() {
        return Ok(());
    }
    Err(plain_error(format!(
        "interval is malformed: time: invalid duration {interval:?}"
    )))
}

/// Go's `time.ParseDuration` grammar (a sequence of decimal numbers with units ns, us, µs,
/// ms, s, m, h), plus BanyanDB's "<n>d". Returns nanoseconds.
fn parse_go_duration(text: &str) -> Option<u128> {
    if let Some(days) = text.strip_suffix('d') {
        return days
            .parse::<u128>()
            .ok()
            .map(|d| d * 86_400 * 1_000_000_000);
    }
    let mut rest = text.strip_prefix(['+', '-']).unwrap_or(text);
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Some(total as u128)
}

/// `api/validate/validate.go`, `Measure` and `tagFamily`: plain errors, so Unknown. Neither
/// `encoding_method` nor the entity's tag names are checked against anything upstream.
pub fn validate_measure(m: &database::Measure) -> Result<(), Status> {
    let md = m.metadata.as_ref().expect("PGV checked");
    if md.name.is_empty() {
        return Err(plain_error("measure name is empty"));
    }
    if md.group.is_empty() {
        return Err(plain_error("measure group is empty"));
    }
    for field in &m.fields {
        if field.field_type == database::FieldType::Unspecified as i32 {
            return Err(plain_error("field type is unspecified"));
        }
        if field.compression_method == database::CompressionMethod::Unspecified as i32 {
            return Err(plain_error("compression method is unspecified"));
        }
    }
    if m.index_mode && !m.fields.is_empty() {
        return Err(plain_error(
            "index mode is enabled, but fields are not empty",
        ));
    }
    for family in &m.tag_families {
        if family.name.is_empty() {
            return Err(plain_error("tag family name is empty"));
        }
        for tag in &family.tags {
            if tag.name.is_empty() {
                return Err(plain_error("tag name is empty"));
            }
            if tag.name.contains('#') {
                return Err(plain_error(format!(
                    "tag name {:?} must not contain reserved character \"#\"",
                    tag.name
                )));
            }
            if tag.r#type == database::TagType::Unspecified as i32 {
                return Err(plain_error("tag type is unspecified"));
            }
        }
    }
    Ok(())
}

/// Why a Write stream ends before its half-close.
#[derive(Debug)]
pub enum StreamEnd {
    /// A PGV violation (`api/proto/banyandb/measure/v1/write.proto`): `Recv` returns the
    /// validator's InvalidArgument and `Write` returns it (`banyand/liaison/grpc/measure.go`).
    Invalid(Status),
}

/// PGV on `measure.v1.WriteRequest`: `message_id` gt 0, `data_point` required,
/// `DataPointValue.timestamp` required, `DataPointValue.tag_families` min_items 1.
pub fn pgv_write(request: &measure::WriteRequest) -> Result<(), StreamEnd> {
    let invalid =
        |field: &str, rule: &str| Err(StreamEnd::Invalid(pgv("WriteRequest", field, rule)));
    let Some(point) = &request.data_point else {
        return invalid("DataPoint", "value is required");
    };
    if request.message_id == 0 {
        return invalid("MessageId", "value must be greater than 0");
    }
    if point.timestamp.is_none() {
        return invalid("DataPoint.Timestamp", "value is required");
    }
    if point.tag_families.is_empty() {
        return invalid(
            "DataPoint.TagFamilies",
            "value must contain at least 1 item(s)",
        );
    }
    Ok(())
}

/// `pkg/timestamp/nano.go`, `CheckPb`: whole milliseconds, within the int64-nanosecond range
/// (1677-09-21 to 2262-04-11). A failure is STATUS_INVALID_TIMESTAMP
/// (`measure.go`, `validateWriteRequest`).
pub fn timestamp_ok(ts: &prost_types::Timestamp) -> bool {
    const MIN_SECONDS: i64 = -9_223_372_036;
    const MAX_SECONDS: i64 = 9_223_372_036;
    ts.nanos % 1_000_000 == 0 && (MIN_SECONDS..MAX_SECONDS).contains(&ts.seconds)
}

/// Where each entity tag sits in the measure's schema: (family index, tag index).
pub fn entity_positions(schema: &database::Measure) -> Vec<(String, Option<(usize, usize)>)> {
    let names = schema
        .entity
        .as_ref()
        .map(|e| e.tag_names.clone())
        .unwrap_or_default();
    names
        .into_iter()
        .map(|name| {
            let at = schema
                .tag_families
                .iter()
                .enumerate()
                .find_map(|(f, family)| {
                    family
                        .tags
                        .iter()
                        .position(|t| t.name == name)
                        .map(|t| (f, t))
                });
            (name, at)
        })
        .collect()
}

/// `pkg/partition/entity.go` (`EntityLocator.Locate`, `GetTagByOffset`): every entity tag's
/// position must exist in the written tag families, else `ErrMalformedElement`, which
/// `navigate` turns into STATUS_INTERNAL_ERROR (`measure.go`, `processAndPublishRequest`).
/// Entity names the schema does not declare are skipped (`NewEntityLocator`).
pub fn entity_present(schema: &database::Measure, point: &measure::DataPointValue) -> bool {
    entity_positions(schema).iter().all(|(_, at)| match at {
        Some((family, tag)) => point
            .tag_families
            .get(*family)
            .is_some_and(|f| f.tags.len() > *tag),
        None => true,
    })
}

/// How the data node stores a point positionally (`banyand/measure/write_standalone.go`,
/// `handle`, `handleTagFamily`, `encodeFieldValue`, `encodeTagValue`): schema field `i`
/// takes written field `i`; missing ones and values of the wrong type are stored as NULL;
/// extra tags and fields are ignored; more tag families than the schema drops the point
/// (logged, yet the client got STATUS_SUCCEED). Returns the stored fields (`None`: NULL),
/// the entity values, and the shape differences (which upstream never reports: the stand-in
/// records them so that tests can assert there were none).
pub struct Laid {
    pub fields: Vec<Option<i64>>,
    pub entity: Vec<String>,
    pub differences: Vec<String>,
    /// `Some(reason)` when the data node drops the point.
    pub dropped: Option<String>,
}

pub fn lay_out(schema: &database::Measure, point: &measure::DataPointValue) -> Laid {
    let mut differences = Vec::new();
    let dropped = (point.tag_families.len() > schema.tag_families.len()).then(|| {
        format!(
            "{} tag families, the schema has {}",
            point.tag_families.len(),
            schema.tag_families.len()
        )
    });
    for (index, spec) in schema.tag_families.iter().enumerate() {
        let written = point.tag_families.get(index).map_or(0, |f| f.tags.len());
        if written != spec.tags.len() {
            differences.push(format!(
                "family {}: {written} tags written, {} in the schema",
                spec.name,
                spec.tags.len()
            ));
        }
        for (t, tag_spec) in spec.tags.iter().enumerate() {
            use model::tag_value::Value;
            let value = point.tag_families.get(index).and_then(|f| f.tags.get(t));
            let fits = match value.and_then(|v| v.value.as_ref()) {
                None | Some(Value::Null(_)) => true,
                Some(Value::Str(_)) => tag_spec.r#type == database::TagType::String as i32,
                Some(Value::Int(_)) => tag_spec.r#type == database::TagType::Int as i32,
                Some(Value::StrArray(_)) => {
                    tag_spec.r#type == database::TagType::StringArray as i32
                }
                Some(Value::IntArray(_)) => tag_spec.r#type == database::TagType::IntArray as i32,
                Some(Value::BinaryData(_)) => {
                    tag_spec.r#type == database::TagType::DataBinary as i32
                }
                Some(Value::Timestamp(_)) => tag_spec.r#type == database::TagType::Timestamp as i32,
            };
            if !fits {
                differences.push(format!(
                    "tag {} has the wrong type: stored as NULL",
                    tag_spec.name
                ));
            }
        }
    }
    if point.fields.len() != schema.fields.len() {
        differences.push(format!(
            "{} fields written, {} in the schema",
            point.fields.len(),
            schema.fields.len()
        ));
    }
    let fields = schema
        .fields
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            use model::field_value::Value;
            match point.fields.get(i).and_then(|f| f.value.as_ref()) {
                Some(Value::Int(v)) if spec.field_type == database::FieldType::Int as i32 => {
                    Some(v.value)
                }
                None | Some(Value::Null(_)) => None,
                Some(Value::Str(_)) if spec.field_type == database::FieldType::String as i32 => {
                    None
                }
                Some(Value::Float(_)) if spec.field_type == database::FieldType::Float as i32 => {
                    None
                }
                Some(Value::BinaryData(_))
                    if spec.field_type == database::FieldType::DataBinary as i32 =>
                {
                    None
                }
                Some(_) => {
                    differences.push(format!(
                        "field {} has the wrong type: stored as NULL",
                        spec.name
                    ));
                    None
                }
            }
        })
        .collect();
    let entity = entity_positions(schema)
        .into_iter()
        .map(|(_, at)| {
            at.and_then(|(f, t)| point.tag_families.get(f)?.tags.get(t)?.value.clone())
                .map_or_else(String::new, |value| match value {
                    model::tag_value::Value::Str(s) => s.value,
                    model::tag_value::Value::Int(i) => i.value.to_string(),
                    other => format!("{other:?}"),
                })
        })
        .collect();
    Laid {
        fields,
        entity,
        differences,
        dropped,
    }
}

/// `banyand/liaison/grpc/measure.go` (`processAndPublishRequest`): `version` 0 becomes the
/// message id.
pub fn version_of(request: &measure::WriteRequest) -> i64 {
    match request.data_point.as_ref().map_or(0, |p| p.version) {
        0 => request.message_id as i64,
        version => version,
    }
}

/// Same series and timestamp: the higher version wins, and on a tie the point already
/// stored stays (`banyand/measure/datapoints.go` sorts by version descending;
/// `banyand/measure/merger.go` keeps the left point when `left >= right`;
/// `banyand/measure/query.go` replaces only on a strictly greater version).
pub fn replaces(existing: Option<i64>, incoming: i64) -> bool {
    existing.is_none_or(|existing| incoming > existing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_and_days() {
        assert_eq!(parse_go_duration("10s"), Some(10_000_000_000));
        assert_eq!(parse_go_duration("100ms"), Some(100_000_000));
        assert_eq!(parse_go_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("2d"), Some(2 * 86_400 * 1_000_000_000));
        assert_eq!(parse_go_duration("10 s"), None);
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn ties_keep_the_stored_point() {
        assert!(replaces(None, 1));
        assert!(replaces(Some(1), 2));
        assert!(!replaces(Some(2), 2));
        assert!(!replaces(Some(3), 2));
    }
}
