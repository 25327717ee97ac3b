//! The wire side: the channel (TLS, auth metadata, deadlines), the schema bootstrap and
//! one Write stream per flush.

use std::{collections::HashMap, time::Duration};

use tonic::{
    Code, Request,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

use super::{
    ExportError,
    point::Point,
    proto::{
        common::v1::{self as common, service_client::ServiceClient},
        database::v1::{
            self as database, group_registry_service_client::GroupRegistryServiceClient,
            measure_registry_service_client::MeasureRegistryServiceClient,
        },
        measure::v1::{self as measure, measure_service_client::MeasureServiceClient},
        model::v1 as model,
    },
    schema::{self, Layout, MeasureDef, TagSlot},
};
use crate::config::BanyanDbConfig;

/// How one point fared in a Write stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    InvalidTimestamp,
    NotFound,
    ExpiredSchema,
    InternalError,
    /// A schema created but not applied yet (BanyanDB 0.11+).
    SchemaNotApplied,
    /// Any other status (disk full, version, ...): retried.
    Other,
    /// No reply for the message: retried.
    NoReply,
}

impl Outcome {
    fn from_status(status: &str) -> Outcome {
        match model::Status::from_str_name(status) {
            Some(model::Status::Succeed) => Outcome::Succeeded,
            Some(model::Status::InvalidTimestamp) => Outcome::InvalidTimestamp,
            Some(model::Status::NotFound) => Outcome::NotFound,
            Some(model::Status::ExpiredSchema) => Outcome::ExpiredSchema,
            Some(model::Status::InternalError) => Outcome::InternalError,
            Some(model::Status::SchemaNotApplied) => Outcome::SchemaNotApplied,
            _ => Outcome::Other,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    auth: Option<(
        MetadataValue<tonic::metadata::Ascii>,
        MetadataValue<tonic::metadata::Ascii>,
    )>,
    timeout: Duration,
    group: String,
}

impl Client {
    /// A lazy channel: it connects (and reconnects) when used.
    pub fn new(config: &BanyanDbConfig) -> Result<Client, ExportError> {
        Client::with_channel(config, Client::endpoint(config)?.connect_lazy())
    }

    /// Over a given channel (tests connect in memory); auth and deadlines from `config`.
    pub fn with_channel(config: &BanyanDbConfig, channel: Channel) -> Result<Client, ExportError> {
        let auth = match (&config.username, &config.password) {
            (Some(user), password) => {
                let value = |text: &str, key: &str| {
                    text.parse::<MetadataValue<_>>().map_err(|_| {
                        ExportError::Config(format!(
                            "export.banyandb.{key}: not valid in gRPC metadata"
                        ))
                    })
                };
                Some((
                    value(user, "username")?,
                    value(password.as_deref().unwrap_or(""), "password")?,
                ))
            }
            (None, _) => None,
        };
        Ok(Client {
            channel,
            auth,
            timeout: config.timeout.0,
            group: config.group.0.clone(),
        })
    }

    fn endpoint(config: &BanyanDbConfig) -> Result<Endpoint, ExportError> {
        let tls = config.tls.is_some();
        let scheme = if tls { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", config.addr.0))
            .map_err(|err| ExportError::Config(format!("export.banyandb.addr: {err}")))?
            .connect_timeout(config.timeout.0)
            .tcp_nodelay(true);
        if let Some(files) = &config.tls {
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|err| {
                    ExportError::Config(format!("export.banyandb.tls: {}: {err}", path.display()))
                })
            };
            let mut tls = tonic::transport::ClientTlsConfig::new();
            if let Some(ca) = &files.ca {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
            }
            if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
                tls = tls.identity(tonic::transport::Identity::from_pem(
                    read(cert)?,
                    read(key)?,
                ));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|err| ExportError::Config(format!("export.banyandb.tls: {err}")))?;
        }
        Ok(endpoint)
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        if let Some((user, password)) = &self.auth {
            request.metadata_mut().insert("username", user.clone());
            request.metadata_mut().insert("password", password.clone());
        }
        request
    }

    /// BanyanDB's API version ("0.10" on 0.10.x); `None` when the server does not say.
    /// Also the first contact after a (re)connect: an unreachable server fails here.
    pub async fn api_version(&self) -> Result<Option<String>, ExportError> {
        let mut service = ServiceClient::new(self.channel.clone());
        match service
            .get_api_version(self.request(common::GetApiVersionRequest {}))
            .await
        {
            Ok(response) => Ok(response.into_inner().version.map(|v| v.version)),
            Err(status) if status.code() == Code::Unimplemented => Ok(None),
            Err(status) => Err(ExportError::rpc("GetAPIVersion", status)),
        }
    }

    /// Creates the group when missing; checks its catalog when present.
    pub async fn ensure_group(&self, config: &BanyanDbConfig) -> Result<(), ExportError> {
        let mut groups = GroupRegistryServiceClient::new(self.channel.clone());
        let name = self.group.clone();
        let got = groups
            .get(self.request(database::GroupRegistryServiceGetRequest {
                group: name.clone(),
            }))
            .await;
        let existing = match got {
            Ok(response) => response.into_inner().group,
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => return Err(ExportError::rpc("getting the group", status)),
        };
        match existing {
            Some(group) => {
                if group.catalog != common::Catalog::Measure as i32 {
                    return Err(ExportError::Incompatible(format!(
                        "group {name:?} exists with catalog {}, not CATALOG_MEASURE",
                        common::Catalog::try_from(group.catalog)
                            .map_or("UNKNOWN", |c| c.as_str_name())
                    )));
                }
                Ok(())
            }
            None => {
                let created = groups
                    .create(self.request(database::GroupRegistryServiceCreateRequest {
                        group: Some(schema::group(config)),
                    }))
                    .await;
                match created {
                    Ok(_) => {
                        tracing::info!(group = %name, "created the BanyanDB group");
                        Ok(())
                    }
                    Err(status) if status.code() == Code::AlreadyExists => Ok(()),
                    Err(status) => Err(ExportError::rpc("creating the group", status)),
                }
            }
        }
    }

    /// Reads a measure; `None` when missing.
    async fn get_measure(&self, name: &str) -> Result<Option<database::Measure>, ExportError> {
        let mut measures = MeasureRegistryServiceClient::new(self.channel.clone());
        match measures
            .get(self.request(database::MeasureRegistryServiceGetRequest {
                metadata: Some(schema::metadata(&self.group, name)),
            }))
            .await
        {
            Ok(response) => Ok(response.into_inner().measure),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(ExportError::rpc("getting a measure", status)),
        }
    }

    /// Creates the measure when missing; returns how to write it as stored.
    pub async fn ensure_measure(
        &self,
        def: &MeasureDef,
        interval: Duration,
    ) -> Result<Layout, ExportError> {
        if let Some(stored) = self.get_measure(def.name()).await? {
            return schema::layout(def, &stored).map_err(ExportError::Incompatible);
        }
        let mut measures = MeasureRegistryServiceClient::new(self.channel.clone());
        match measures
            .create(self.request(database::MeasureRegistryServiceCreateRequest {
                measure: Some(def.measure(&self.group, interval)),
            }))
            .await
        {
            Ok(_) => tracing::info!(measure = def.name(), "created the BanyanDB measure"),
            Err(status) if status.code() == Code::AlreadyExists => {}
            Err(status) => return Err(ExportError::rpc("creating a measure", status)),
        }
        let stored = self.get_measure(def.name()).await?.ok_or_else(|| {
            ExportError::Server(format!("measure {:?} vanished after creation", def.name()))
        })?;
        schema::layout(def, &stored).map_err(ExportError::Incompatible)
    }

    /// Writes `points` on one stream: all messages are sent and the stream half-closed
    /// before the replies are read (BanyanDB acks successes only after the half-close).
    pub async fn write(
        &self,
        points: &[Point],
        layouts: &HashMap<u32, Layout>,
    ) -> Result<Vec<Outcome>, ExportError> {
        let requests: Vec<measure::WriteRequest> = points
            .iter()
            .filter_map(|point| Some(write_request(point, layouts.get(&point.module)?)))
            .collect();
        let mut client = MeasureServiceClient::new(self.channel.clone());
        let timeout = self.timeout;
        let replies = tokio::time::timeout(timeout, async {
            let response = client
                .write(self.request(tokio_stream::iter(requests)))
                .await
                .map_err(|status| ExportError::rpc("writing", status))?;
            let mut inbound = response.into_inner();
            let mut replies = HashMap::new();
            while let Some(reply) = inbound
                .message()
                .await
                .map_err(|status| ExportError::rpc("writing", status))?
            {
                replies.insert(reply.message_id, Outcome::from_status(&reply.status));
            }
            Ok::<_, ExportError>(replies)
        })
        .await
        .map_err(|_| ExportError::Timeout(timeout))??;
        Ok(points
            .iter()
            .map(|p| {
                replies
                    .get(&p.message_id)
                    .copied()
                    .unwrap_or(Outcome::NoReply)
            })
            .collect())
    }
}

/// A point in the stored measure's positional layout, with its message id as version.
pub fn write_request(point: &Point, layout: &Layout) -> measure::WriteRequest {
    let str_tag = |value: &str| model::TagValue {
        value: Some(model::tag_value::Value::Str(model::Str {
            value: value.to_owned(),
        })),
    };
    let null_tag = model::TagValue {
        value: Some(model::tag_value::Value::Null(0)),
    };
    let tag_families = layout
        .tag_families
        .iter()
        .map(|family| model::TagFamilyForWrite {
            tags: family
                .iter()
                .map(|slot| match slot {
                    TagSlot::Node => str_tag(&point.node),
                    TagSlot::Workload => str_tag(&point.workload),
                    TagSlot::Null => null_tag.clone(),
                })
                .collect(),
        })
        .collect();
    let fields = layout
        .fields
        .iter()
        .map(|slot| model::FieldValue {
            value: Some(match slot.and_then(|i| point.fields.get(i)) {
                Some(&value) => model::field_value::Value::Int(model::Int { value }),
                None => model::field_value::Value::Null(0),
            }),
        })
        .collect();
    let millis = point.timestamp_ms;
    measure::WriteRequest {
        metadata: Some(layout.metadata.clone()),
        data_point: Some(measure::DataPointValue {
            timestamp: Some(prost_types::Timestamp {
                seconds: millis.div_euclid(1000),
                nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
            }),
            tag_families,
            fields,
            version: i64::try_from(point.message_id).unwrap_or(i64::MAX),
        }),
        message_id: point.message_id,
        data_point_spec: None,
    }
}
