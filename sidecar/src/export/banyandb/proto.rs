//! The generated code of our BanyanDB subset (`proto/banyandb`, mirroring upstream v0.10.3):
//! clients for the exporter, servers for the test stand-in.

/// One module per BanyanDB package, each holding its generated code.
macro_rules! generated_packages {
    ($($module:ident => $package:literal),* $(,)?) => {$(
        #[allow(
            clippy::all,
            clippy::pedantic,
            missing_docs,
            unreachable_pub,
            reason = "generated code"
        )]
        pub mod $module {
            pub mod v1 {
                tonic::include_proto!($package);
            }
        }
    )*};
}

generated_packages! {
    common => "banyandb.common.v1",
    model => "banyandb.model.v1",
    database => "banyandb.database.v1",
    measure => "banyandb.measure.v1",
}
