//! The generated code of our BanyanDB subset (`proto/banyandb`, mirroring upstream v0.10.3):
//! clients for the exporter, servers for the test stand-in.

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_pub,
    reason = "generated code"
)]
pub mod common {
    pub mod v1 {
        tonic::include_proto!("banyandb.common.v1");
    }
}

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_pub,
    reason = "generated code"
)]
pub mod model {
    pub mod v1 {
        tonic::include_proto!("banyandb.model.v1");
    }
}

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_pub,
    reason = "generated code"
)]
pub mod database {
    pub mod v1 {
        tonic::include_proto!("banyandb.database.v1");
    }
}

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_pub,
    reason = "generated code"
)]
pub mod measure {
    pub mod v1 {
        tonic::include_proto!("banyandb.measure.v1");
    }
}
