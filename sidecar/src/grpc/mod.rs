//! The gRPC API (`sidecar.v1.SidecarService`), with the standard health and reflection
//! services beside it. Like every sink it reads the store (and the catalog and the daemon's
//! status) only: requests in [`service`], listings and their pages in [`paging`], messages
//! in [`convert`], the server and its protocol details in [`transport`].

mod convert;
mod paging;
mod service;
mod transport;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::sync::{Semaphore, watch};

pub use self::{
    convert::io_stats,
    paging::Listings,
    transport::{GrpcRouter, Services, ServicesError, grpc_deadline, services_with, set_health},
};
use crate::{status::Status as DaemonStatus, store::Store};

pub const DEFAULT_PAGE_SIZE: u32 = 500;
pub const MAX_PAGE_SIZE: u32 = 10_000;
/// Largest request we accept; requests are small.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 1 << 20;
/// Largest response we send (a full page of histograms fits easily).
pub const MAX_ENCODING_MESSAGE_SIZE: usize = 64 << 20;

pub struct Api {
    store: Arc<RwLock<Store>>,
    status: Arc<DaemonStatus>,
    drains: watch::Receiver<u64>,
    streams: Arc<Semaphore>,
    max_streams: usize,
    interval: Duration,
    /// The listings `GetMetrics` pages are cut from.
    listings: Arc<Listings>,
}

impl Api {
    pub fn new(
        store: Arc<RwLock<Store>>,
        status: Arc<DaemonStatus>,
        drains: watch::Receiver<u64>,
        max_streams: usize,
        interval: Duration,
    ) -> Api {
        Api {
            store,
            status,
            drains,
            streams: Arc::new(Semaphore::new(max_streams)),
            max_streams,
            interval,
            listings: Arc::default(),
        }
    }

    /// The listings, for the task that builds the unfiltered one after each drain.
    pub fn listings(&self) -> Arc<Listings> {
        Arc::clone(&self.listings)
    }

    /// A snapshot of the store: requests never hold the lock the drain takes.
    pub(super) fn read_store(&self) -> Store {
        crate::store::snapshot(&self.store)
    }
}
