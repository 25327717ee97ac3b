//! Stopping a child process that was started for a test or a measurement.

use std::{
    process::{Child, ExitStatus},
    time::{Duration, Instant},
};

/// Sends `signal` and waits up to `grace` for the child to exit; past that, kills it with
/// SIGKILL and reaps it. The exit status when it stopped by itself in time, else `None`.
pub fn stop(child: &mut Child, signal: libc::c_int, grace: Duration) -> Option<ExitStatus> {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's pid, which stays ours until we reap it below.
        unsafe { libc::kill(pid, signal) };
    }
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn a_child_that_exits_on_the_signal_and_one_that_ignores_it() {
        let mut sleeper = Command::new("sleep").arg("30").spawn().expect("sleep");
        let status = stop(&mut sleeper, libc::SIGTERM, Duration::from_secs(5));
        assert!(status.is_some_and(|s| !s.success()), "{status:?}");

        let mut stubborn = Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 30"])
            .spawn()
            .expect("sh");
        // Let the shell install its trap before the signal comes.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            stop(&mut stubborn, libc::SIGTERM, Duration::from_millis(300)),
            None
        );
        assert!(stubborn.try_wait().expect("reaped").is_some());
    }
}
