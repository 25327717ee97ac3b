//! The caller's side of the workload generator (`sidecar-load`): the command line every
//! mode starts with, and the JSON report it prints, which is the ground truth.

use std::{
    io,
    path::Path,
    process::{Command, Output, Stdio},
};

use serde_json::Value;

/// `binary --comm comm args...`, with nothing on its standard input.
pub fn command(binary: &Path, comm: &str, args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("--comm")
        .arg(comm)
        .args(args)
        .stdin(Stdio::null());
    command
}

/// The report of a finished run: the last line of its standard output, once it succeeded.
pub fn report(output: &Output) -> io::Result<Value> {
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default();
    serde_json::from_str(line)
        .map_err(|err| io::Error::other(format!("the report {line:?} is not JSON: {err}")))
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    fn output(code: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_last_line_is_the_report() {
        let report = report(&output(0, "made 3 files\n{\"calls\":7}\n", "")).expect("report");
        assert_eq!(report["calls"], 7);
    }

    #[test]
    fn failures_and_non_json_are_errors() {
        let err = report(&output(1, "", "bad --calls\n")).expect_err("failed run");
        assert!(err.to_string().contains("bad --calls"), "{err}");
        assert!(report(&output(0, "hello\n", "")).is_err());
    }

    #[test]
    fn the_command_line() {
        let command = command(
            Path::new("/bin/sidecar-load"),
            "w1",
            &["fadvise", "--calls", "1"],
        );
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(args, ["--comm", "w1", "fadvise", "--calls", "1"]);
    }
}
