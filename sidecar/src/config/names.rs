//! Addresses and names: listen addresses, BanyanDB's endpoint, and the names we give
//! BanyanDB's schema.

use std::net::SocketAddr;

use super::de::deserialize_str;

/// A listen address, `IP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub SocketAddr);

impl Addr {
    pub fn parse(text: &str) -> Result<Addr, String> {
        text.parse()
            .map(Addr)
            .map_err(|_| format!("bad address {text:?}: expected IP:PORT"))
    }
}

deserialize_str!(Addr, "an address such as 127.0.0.1:9464", Addr::parse);

/// A gRPC endpoint, `HOST:PORT` (a name or an IP address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(pub String);

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let valid = text.parse::<SocketAddr>().is_ok()
            || text.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
        if valid {
            Ok(Endpoint(text.to_owned()))
        } else {
            Err(format!("bad address {text:?}: expected HOST:PORT"))
        }
    }
}

deserialize_str!(
    Endpoint,
    "an address such as 127.0.0.1:17912",
    Endpoint::parse
);

/// A BanyanDB group name or tag value we choose: 1 to 64 of letters, digits, '-', '_', '.'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaName(pub String);

impl SchemaName {
    pub fn parse(text: &str) -> Result<SchemaName, String> {
        if text.is_empty()
            || text.len() > 64
            || !text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "bad name {text:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
            ));
        }
        Ok(SchemaName(text.to_owned()))
    }
}

deserialize_str!(SchemaName, "a name", SchemaName::parse);
