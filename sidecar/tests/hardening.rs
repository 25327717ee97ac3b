//! What a careless or hostile local client can do to the running daemon (root: the daemon
//! attaches its programs before it serves).

mod support;

use std::{
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use support::{Sidecar, http_get, kernel};

/// CPU time (user + system) of a process, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Holds `n` idle connections to `addr` (those refused are simply not held).
fn idle_sockets(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect()
}

/// Idle sockets beyond the limits, under a descriptor limit of 128: the daemon keeps
/// answering /health/live, does not spin, and its descriptors stay bounded. Run twice: with
/// the connection cap below the descriptor limit (connections over it are closed at once),
/// and above it (accept fails with EMFILE: it must pause and log, not spin).
#[test]
fn idle_sockets_cannot_take_the_servers_down() {
    let Some(_kernel) = kernel("idle_sockets_cannot_take_the_servers_down") else {
        return;
    };
    for max_connections in [20, 1000] {
        let server = format!(
            "  max_connections: {max_connections}\n  handshake_timeout: 1s\n  idle_timeout: 3s\n"
        );
        let sidecar = Sidecar::start_wrapped_with_server(
            &["prlimit", "--nofile=128:128", "--"],
            &server,
            "interval: 1s\n",
        );
        let pid = sidecar.pid().unwrap();
        // The daemon's timeouts run from each accept, so the limit runs from the first
        // connection, not from the last.
        let connecting = Instant::now();
        let held: Vec<TcpStream> = idle_sockets(sidecar.addr, 300)
            .into_iter()
            .chain(idle_sockets(sidecar.grpc, 300))
            .collect();
        let before = cpu_ticks(pid);
        let started = Instant::now();
        // Health answers again once descriptors come back: the accepted sockets that never
        // send a request are closed by the handshake timeout (1 s), the waiting ones are
        // shed with the spare descriptor or accepted in the next wave, and any left by the
        // idle timeout (3 s). Seen here: 0.2 to 4.3 s after the last socket was made, by
        // how the waves fell. 10 s bounds all of that with room for a loaded machine; a
        // daemon that stopped answering would not come back at all.
        let limit = Duration::from_secs(10);
        let answered = loop {
            if let Ok((200, _)) = http_get(sidecar.addr, "/health/live") {
                break started.elapsed();
            }
            assert!(
                connecting.elapsed() < limit,
                "/health/live unanswered {limit:?} after the first idle socket with {} idle sockets held (max_connections {max_connections}); log:\n{}",
                held.len(),
                sidecar.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        std::thread::sleep(Duration::from_secs(2));
        let used = cpu_ticks(pid) - before;
        let window = started.elapsed();
        println!(
            "max_connections {max_connections}: {} idle sockets, /health/live after {answered:?}, {used} ticks of CPU in {window:?}, {} fds",
            held.len(),
            open_fds(pid)
        );
        // Spinning would use about one tick per 10 ms of the window.
        assert!(
            (used as f64) < window.as_secs_f64() * 100.0 * 0.2,
            "{used} ticks in {window:?}: the accept loop spins"
        );
        assert!(open_fds(pid) <= 128);
        let log = sidecar.log();
        let expected = if max_connections == 20 {
            "connection limit reached"
        } else {
            "accepting a connection failed"
        };
        assert!(log.contains(expected), "{expected} not logged:\n{log}");
        drop(held);
    }
}
