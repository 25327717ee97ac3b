//! One HTTP/1.1 GET over a fresh loopback connection, with no client library: the tests and
//! the benchmark see exactly the bytes a scraper gets, and the time to the last of them.

use std::{
    fmt::Write as _,
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer to [`get`].
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The status line and the headers, as sent.
    pub head: String,
    /// The body, with chunked transfer encoding undone.
    pub body: String,
    /// From connecting to the last byte read: the client's own parsing is not part of the
    /// server's latency.
    pub elapsed: Duration,
}

impl Response {
    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// `GET path` with `headers`, on a connection closed after the answer.
pub fn get(addr: impl ToSocketAddrs, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    let addr: SocketAddr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("no address to connect to"))?;
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    // Sized for the largest /metrics the benchmark reads, so that growing the buffer is
    // not part of the timed read.
    let mut raw = Vec::with_capacity(4 << 20);
    stream.read_to_end(&mut raw)?;
    let elapsed = started.elapsed();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("no status"))?;
    let mut response = Response {
        status,
        head,
        body: String::new(),
        elapsed,
    };
    let body = &raw[end + 4..];
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    response.body = if chunked {
        String::from_utf8_lossy(&dechunk(body)?).into_owned()
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    Ok(response)
}

/// Undoes chunked transfer encoding (RFC 9112 section 7.1; extensions and trailers ignored).
fn dechunk(mut rest: &[u8]) -> io::Result<Vec<u8>> {
    let bad = |what: &str| io::Error::other(format!("bad chunked body: {what}"));
    let mut out = Vec::with_capacity(rest.len());
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("no chunk size line"))?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| bad("size"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(|| bad("short chunk"))?;
        out.extend_from_slice(chunk);
        rest = rest[size..]
            .strip_prefix(b"\r\n")
            .ok_or_else(|| bad("chunk end"))?;
    }
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, thread};

    use super::*;

    /// Serves one connection with `answer` and returns what the client sent.
    fn serve_once(answer: &'static [u8]) -> (SocketAddr, thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && conn.read(&mut byte).expect("read") == 1 {
                request.push(byte[0]);
            }
            conn.write_all(answer).expect("write");
            String::from_utf8(request).expect("request text")
        });
        (addr, server)
    }

    #[test]
    fn plain_body_status_and_headers() {
        let (addr, server) =
            serve_once(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope\n");
        let response = get(addr, "/x?a=1", &[("Accept", "text/plain")]).expect("get");
        assert_eq!(response.status, 404);
        assert_eq!(response.body, "nope\n");
        assert_eq!(response.header("content-type"), Some("text/plain"));
        let request = server.join().expect("server");
        assert!(request.starts_with("GET /x?a=1 HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("\r\nAccept: text/plain\r\n"), "{request}");
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
    }

    #[test]
    fn chunked_body_split_inside_a_character() {
        // "é" is two bytes; the chunks cut it in half.
        let (addr, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\na\xc3\r\n2;x=y\r\n\xa9b\r\n0\r\n\r\n",
        );
        let response = get(addr, "/", &[]).expect("get");
        assert_eq!(response.body, "aéb");
        server.join().expect("server");
    }

    #[test]
    fn no_header_end_is_an_error() {
        let (addr, server) = serve_once(b"HTTP/1.1 200 OK\r\n");
        assert!(get(addr, "/", &[]).is_err());
        server.join().expect("server");
    }
}
