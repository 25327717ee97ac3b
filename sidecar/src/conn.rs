//! What every accepted connection of both servers goes through, so that no client, careless
//! or hostile, can hold the servers: a cap on open connections per server, a deadline for
//! the first response (a request's headers, an HTTP/2 preface or a TLS handshake must arrive
//! in time), an idle timeout, and an accept loop that backs off and logs when the process
//! runs out of descriptors instead of spinning.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// The limits of one server (`server.max_connections`, `server.handshake_timeout`,
/// `server.idle_timeout`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// From accept until the server first writes: a client must have sent a complete
    /// request (or its TLS ClientHello, or its HTTP/2 preface and a request) by then.
    pub handshake_timeout: Duration,
    /// No byte read or written for this long closes the connection.
    pub idle_timeout: Duration,
}

/// Pause after an accept error (EMFILE, ENFILE, ENOBUFS...): the error persists until a
/// connection closes, and retrying at once would spin a core.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one log line per this long about refused connections or accept errors.
const LOG_EVERY: Duration = Duration::from_secs(10);

fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A listener whose connections carry the limits.
pub struct GuardedListener {
    listener: TcpListener,
    limits: Limits,
    permits: Arc<Semaphore>,
    /// Which server, for the log.
    name: &'static str,
    refused: u64,
    errors: u64,
    last_log: Option<Instant>,
    /// A descriptor held in reserve: out of descriptors, it is freed to accept and close the
    /// waiting connection at once (so that the backlog is shed, not left to time out).
    spare: Option<std::fs::File>,
}

fn reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

impl GuardedListener {
    pub fn new(listener: TcpListener, limits: Limits, name: &'static str) -> GuardedListener {
        GuardedListener {
            listener,
            permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            name,
            refused: 0,
            errors: 0,
            last_log: None,
            spare: reserve(),
        }
    }

    fn should_log(&mut self) -> bool {
        let now = Instant::now();
        let due = self.last_log.is_none_or(|at| now - at >= LOG_EVERY);
        if due {
            self.last_log = Some(now);
        }
        due
    }

    /// The next connection within the limits. Never fails: errors are logged and waited out.
    pub async fn accept(&mut self) -> (Guarded<TcpStream>, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    match Arc::clone(&self.permits).try_acquire_owned() {
                        Ok(permit) => return (Guarded::new(stream, self.limits, permit), peer),
                        Err(_) => {
                            // Closed at once: the client sees a reset, not a hang.
                            self.refused += 1;
                            if self.should_log() {
                                tracing::warn!(
                                    server = self.name,
                                    limit = self.limits.max_connections,
                                    refused_total = self.refused,
                                    "connection limit reached: closing new connections (server.max_connections)"
                                );
                            }
                        }
                    }
                }
                Err(err) if out_of_descriptors(&err) && self.spare.take().is_some() => {
                    // Shed one waiting connection with the reserved descriptor.
                    if let Ok((stream, _)) = self.listener.accept().await {
                        drop(stream);
                    }
                    self.spare = reserve();
                    self.errors += 1;
                    if self.should_log() {
                        tracing::warn!(
                            server = self.name,
                            errors_total = self.errors,
                            "accepting a connection failed: {err}; closing waiting connections (lower server.max_connections or raise the descriptor limit)"
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(err) => {
                    self.errors += 1;
                    if self.should_log() {
                        tracing::warn!(
                            server = self.name,
                            errors_total = self.errors,
                            "accepting a connection failed: {err}; pausing accepts for {ACCEPT_ERROR_PAUSE:?}"
                        );
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }

    /// The guarded connections as a stream (for tonic).
    pub fn into_stream(
        self,
    ) -> impl tokio_stream::Stream<Item = io::Result<Guarded<TcpStream>>> + Send + 'static {
        accept_stream(self)
    }
}

/// `accept` in a loop, as a stream that never ends.
fn accept_stream(
    listener: GuardedListener,
) -> impl tokio_stream::Stream<Item = io::Result<Guarded<TcpStream>>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut listener = listener;
        loop {
            let (stream, _) = listener.accept().await;
            if tx.send(Ok(stream)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

impl axum::serve::Listener for GuardedListener {
    type Io = Guarded<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        GuardedListener::accept(self).await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A connection with its deadlines; it holds its slot under the cap until it is dropped.
pub struct Guarded<T> {
    inner: T,
    limits: Limits,
    /// Fires at the earliest deadline that may apply; re-armed lazily.
    timer: Pin<Box<Sleep>>,
    last_activity: Instant,
    handshake_deadline: Option<Instant>,
    _permit: OwnedSemaphorePermit,
}

impl<T> Guarded<T> {
    fn new(inner: T, limits: Limits, permit: OwnedSemaphorePermit) -> Guarded<T> {
        let now = Instant::now();
        let handshake_deadline = now + limits.handshake_timeout;
        let first = handshake_deadline.min(now + limits.idle_timeout);
        Guarded {
            inner,
            limits,
            timer: Box::pin(tokio::time::sleep_until(first)),
            last_activity: now,
            handshake_deadline: Some(handshake_deadline),
            _permit: permit,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The deadline in force now.
    fn deadline(&self) -> Instant {
        let idle = self.last_activity + self.limits.idle_timeout;
        self.handshake_deadline.map_or(idle, |h| h.min(idle))
    }

    /// An error once the deadline has passed; otherwise arms the timer (registering the
    /// task's waker, so that a connection waiting on a silent peer is woken to be closed).
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            let deadline = self.deadline();
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            if Instant::now() >= self.deadline() {
                let what = if self.handshake_deadline.is_some_and(|h| h <= Instant::now()) {
                    "no complete request or handshake within server.handshake_timeout"
                } else {
                    "idle for server.idle_timeout"
                };
                return Err(io::Error::new(io::ErrorKind::TimedOut, what));
            }
        }
    }
}

impl<T> Guarded<T> {
    /// A write's outcome: bytes written are activity (and answer the handshake deadline);
    /// a write held by a peer that stops reading is covered by the deadlines.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(written)) => {
                if written > 0 {
                    self.last_activity = Instant::now();
                    self.handshake_deadline = None;
                }
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                self.check_deadline(cx)?;
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last_activity = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                this.check_deadline(cx)?;
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Guarded<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
