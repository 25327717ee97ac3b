//! The timing loop of figure 1, run in a child process (`cargo xtask bench-loop`) so that
//! the process being traced does nothing but the calls it times.

use std::{fs, path::PathBuf, time::Instant};

use anyhow::{Result, bail};
use clap::Args;

/// The timing loop run in a child process: `cargo xtask bench-loop`.
#[derive(Args)]
pub struct LoopArgs {
    #[arg(long)]
    op: String,
    #[arg(long)]
    iters: u64,
    #[arg(long, default_value_t = 5)]
    batches: u32,
    #[arg(long)]
    file: PathBuf,
}

/// Times `iters` calls of one operation per batch, printing ns per call for each batch.
pub fn bench_loop(args: &LoopArgs) -> Result<()> {
    use std::os::fd::AsRawFd as _;
    let file = fs::File::open(&args.file)?;
    let fd = file.as_raw_fd();
    let mut buf = vec![0u8; 4096];
    let pread = |buf: &mut [u8]| {
        // SAFETY: `buf` is 4096 bytes long.
        unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), 4096, 0) }
    };
    if pread(&mut buf) != 4096 {
        bail!("pread of {} did not return 4096 bytes", args.file.display());
    }
    let mut results = Vec::new();
    for _ in 0..args.batches {
        let start = Instant::now();
        match args.op.as_str() {
            "fadvise" => {
                for _ in 0..args.iters {
                    // SAFETY: a plain syscall on a descriptor we hold.
                    let ret = unsafe { libc::posix_fadvise(fd, 0, 4096, libc::POSIX_FADV_NORMAL) };
                    if ret != 0 {
                        bail!("posix_fadvise: {ret}");
                    }
                }
            }
            "pread" => {
                for _ in 0..args.iters {
                    if pread(&mut buf) != 4096 {
                        bail!("short pread");
                    }
                }
            }
            other => bail!("unknown op {other}"),
        }
        results.push(start.elapsed().as_nanos() as f64 / args.iters as f64);
    }
    println!("{}", serde_json::to_string(&results)?);
    Ok(())
}
