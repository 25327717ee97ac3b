//! The gRPC server: the services it hosts, TLS and authentication, and the protocol details
//! tonic leaves to us (the caller's deadline header, the status of oversized requests).

use std::time::Duration;

use tonic::{Status, metadata::MetadataMap};

use super::{Api, MAX_DECODING_MESSAGE_SIZE, MAX_ENCODING_MESSAGE_SIZE};
use crate::api::pb;

/// The caller's timeout from the `grpc-timeout` header: `<1 to 8 digits><H|M|S|m|u|n>`, as
/// the gRPC HTTP/2 protocol defines it. A header outside that grammar is INVALID_ARGUMENT.
pub fn grpc_deadline(metadata: &MetadataMap) -> Result<Option<Duration>, Status> {
    let Some(value) = metadata.get("grpc-timeout") else {
        return Ok(None);
    };
    let invalid = || {
        Status::invalid_argument(
            "grpc-timeout: expected 1 to 8 digits and a unit of H, M, S, m, u or n",
        )
    };
    let value = value.to_str().map_err(|_| invalid())?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1).ok_or_else(invalid)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let amount: u64 = digits.parse().map_err(|_| invalid())?;
    Ok(Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(invalid()),
    }))
}

/// When a request's timeout ends; none when it lies beyond what the clock can represent
/// (as good as no deadline).
pub(super) fn deadline_after(timeout: Option<Duration>) -> Option<tokio::time::Instant> {
    timeout.and_then(|timeout| tokio::time::Instant::now().checked_add(timeout))
}

/// The response mapping every service goes through ([`resource_exhausted_for_oversized`]).
type ResponseMap = fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>;

/// The gRPC router with that mapping as its layer.
pub type GrpcRouter = tonic::transport::server::Router<
    tower::layer::util::Stack<
        tower::util::MapResponseLayer<ResponseMap>,
        tower::layer::util::Identity,
    >,
>;

/// The services the gRPC server hosts, ready to be served.
pub struct Services {
    pub router: GrpcRouter,
    pub health: tonic_health::server::HealthReporter,
}

#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("TLS: {0}")]
    Tls(#[from] tonic::transport::Error),
}

/// tonic answers OUT_OF_RANGE to a request larger than the decoding limit; gRPC's
/// convention (and grpc-go's, grpc-java's) is RESOURCE_EXHAUSTED. The status comes in the
/// headers of a trailers-only answer, or in the trailers.
fn resource_exhausted_for_oversized(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    rewrite_oversized(response.headers_mut());
    response.map(|body| tonic::body::Body::new(OversizedTrailers(body)))
}

fn rewrite_oversized(headers: &mut http::HeaderMap) {
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    // grpc-message is percent-encoded.
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.replace("%20", " ").contains("message length too large"));
    if out_of_range && too_large {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from(tonic::Code::ResourceExhausted as i32),
        );
    }
}

/// A response body whose trailers get [`rewrite_oversized`].
struct OversizedTrailers(tonic::body::Body);

impl http_body::Body for OversizedTrailers {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.0).poll_frame(cx);
        polled.map(|frame| {
            frame.map(|frame| {
                frame.map(|mut frame| {
                    if let Some(trailers) = frame.trailers_mut() {
                        rewrite_oversized(trailers);
                    }
                    frame
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// The services; with a token, the API and reflection require it (health never does);
/// with TLS, every service is served over it.
pub fn services_with(
    api: Api,
    token: Option<crate::auth::BearerToken>,
    tls: Option<&crate::tls::TlsFiles>,
) -> Result<Services, ServicesError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder().build_v1()?;
    // Older grpcurl and grpcui, Postman and Python's grpcio-reflection speak only v1alpha.
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;
    let api = pb::sidecar_service_server::SidecarServiceServer::new(api)
        .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_ENCODING_MESSAGE_SIZE);
    let check = crate::auth::grpc_interceptor(token);
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls.tonic_config())?;
    }
    let too_large: ResponseMap = resource_exhausted_for_oversized;
    let router = server
        .layer(tower::util::MapResponseLayer::new(too_large))
        .add_service(health_service)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection,
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection_v1alpha,
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            api, check,
        ));
    Ok(Services { router, health })
}

/// Health of "" and of the API: SERVING once the sidecar is ready.
pub async fn set_health(reporter: &tonic_health::server::HealthReporter, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    for service in ["", crate::api::SERVICE_NAME] {
        reporter.set_service_status(service, status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_header() {
        let mut metadata = MetadataMap::new();
        assert_eq!(grpc_deadline(&metadata).unwrap(), None);
        metadata.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(
            grpc_deadline(&metadata).unwrap(),
            Some(Duration::from_millis(250))
        );
        metadata.insert("grpc-timeout", "3S".parse().unwrap());
        assert_eq!(
            grpc_deadline(&metadata).unwrap(),
            Some(Duration::from_secs(3))
        );
        // The largest the grammar allows: far, but representable or "no deadline".
        metadata.insert("grpc-timeout", "99999999H".parse().unwrap());
        let far = grpc_deadline(&metadata).unwrap().unwrap();
        assert_eq!(far, Duration::from_secs(99_999_999 * 3600));
        let _ = deadline_after(Some(far));
        assert_eq!(deadline_after(Some(Duration::MAX)), None);
        for bad in ["x", "18446744073709551615H", "5", "-1S", "1.5S", "12s"] {
            metadata.insert("grpc-timeout", bad.parse().unwrap());
            let err = grpc_deadline(&metadata).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }
}
