//! Child processes the bench starts and stops.

use std::{
    process::Child,
    time::{Duration, Instant},
};

pub(super) fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Stops a child we started: `sig` first, SIGKILL after `grace`.
pub(super) fn stop(mut child: Child, sig: libc::c_int, grace: Duration) {
    signal(&child, sig);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
