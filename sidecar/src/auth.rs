//! Optional bearer-token authentication for `/metrics` and the gRPC API.
//!
//! The token lives in a file (`server.token_file`), read when the configuration is loaded,
//! so that it never appears in the configuration, the command line or the log. Requests
//! carry `Authorization: Bearer <token>`; the comparison takes the same time whatever the
//! first differing byte. The health endpoints (HTTP `/health/*`, `grpc.health.v1`) stay
//! open: probes must reach them, and they reveal only whether the sidecar is ready.

use std::{fmt, path::PathBuf, sync::Arc};

use serde::{Deserialize, Deserializer, de::Error as _};

/// The expected token. Its `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken {
    token: Arc<[u8]>,
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    pub fn new(token: &str) -> Option<BearerToken> {
        let token = token.trim();
        (!token.is_empty()).then(|| BearerToken {
            token: Arc::from(token.as_bytes()),
        })
    }

    /// Reads a token file (a regular file of at most 64 KiB): its content, surrounding
    /// whitespace removed, must be one non-empty word. A token with a space or newline inside
    /// could never be presented in an `Authorization` header: refused at start rather than
    /// answering 401 to every request.
    pub fn from_file(path: &std::path::Path) -> Result<BearerToken, String> {
        let text = crate::files::read_regular_text(path, crate::files::MAX_TOKEN_BYTES)
            .map_err(|err| format!("cannot read token file {}: {err}", path.display()))?;
        if text
            .trim()
            .contains(|c: char| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "token file {}: the token has whitespace or a control character inside",
                path.display()
            ));
        }
        BearerToken::new(&text).ok_or_else(|| format!("token file {} is empty", path.display()))
    }

    /// Whether an `Authorization` header value carries this token.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        // The scheme is case-insensitive (RFC 9110, section 11.1).
        let Some(presented) = authorization
            .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "))
            .map(|v| &v[7..])
        else {
            return false;
        };
        constant_time_eq(presented, &self.token)
    }
}

/// Equal slices, in a time that does not depend on where they differ (subtle's slice
/// comparison; only a length difference returns early, and the length is no secret).
fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(presented, expected).into()
}

impl<'de> Deserialize<'de> for BearerToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = PathBuf::deserialize(deserializer)?;
        BearerToken::from_file(&path).map_err(D::Error::custom)
    }
}

/// The gRPC side: an interceptor for the API and reflection services.
pub fn grpc_interceptor(
    token: Option<BearerToken>,
) -> impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |request: tonic::Request<()>| {
        let Some(token) = &token else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .map(tonic::metadata::MetadataValue::as_bytes);
        if token.accepts(presented) {
            Ok(request)
        } else {
            Err(tonic::Status::unauthenticated(
                "missing or wrong bearer token (authorization: Bearer <token>)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_that_no_header_can_carry_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  s3cret\n").unwrap();
        assert!(
            BearerToken::from_file(&file)
                .unwrap()
                .accepts(Some(b"Bearer s3cret"))
        );
        for bad in ["s3c ret\n", "s3c\nret\n", "a\tb"] {
            std::fs::write(&file, bad).unwrap();
            let err = BearerToken::from_file(&file).unwrap_err();
            assert!(err.contains("whitespace or a control character"), "{err}");
        }
        let err = BearerToken::from_file(std::path::Path::new("/dev/zero")).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn accepts_only_the_exact_bearer_token() {
        let token = BearerToken::new("s3cret\n").unwrap();
        assert!(token.accepts(Some(b"Bearer s3cret")));
        assert!(!token.accepts(Some(b"Bearer s3cre")));
        assert!(!token.accepts(Some(b"Bearer s3cret2")));
        assert!(!token.accepts(Some(b"Bearer S3cret")));
        assert!(!token.accepts(Some(b"Basic s3cret")));
        assert!(!token.accepts(Some(b"s3cret")));
        assert!(!token.accepts(None));
        assert!(BearerToken::new(" \n").is_none());
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
    }

    #[test]
    fn an_empty_or_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(
            BearerToken::from_file(&empty)
                .unwrap_err()
                .contains("is empty")
        );
        let missing = dir.path().join("missing");
        assert!(
            BearerToken::from_file(&missing)
                .unwrap_err()
                .contains("cannot read token file")
        );
    }
}
