//! Workload generator: does exactly what it is told and reports what it did, so that its
//! report is the ground truth the kernel tests compare the sidecar against.
//!
//! Every mode names its process (`--comm`) before doing anything, so that the sidecar can
//! attribute it by comm even after it exits.

use std::{
    ffi::CString,
    fs::{File, OpenOptions},
    io::{Read as _, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

#[path = "sidecar-load/bpf_cost.rs"]
mod bpf_cost;
#[path = "sidecar-load/file_io.rs"]
mod file_io;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "sidecar-load",
    about = "Generates fadvise, page-cache and reclaim load and reports exactly what it did"
)]
struct Cli {
    /// Process name (comm) to take before doing anything (15 bytes at most).
    #[arg(long, global = true, default_value = "sidecar-load")]
    comm: String,
    /// Stay alive this long after reporting (e.g. 2s), so that the sidecar classifies the
    /// process from its /proc entry (its cgroup) rather than from the comm it left.
    #[arg(long, global = true, value_parser = sidecar_common::duration::parse)]
    linger: Option<Duration>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// posix_fadvise calls on one file from several threads.
    Fadvise {
        /// Successful calls in total.
        #[arg(long, default_value_t = 1000)]
        calls: u64,
        #[arg(long, default_value_t = 1)]
        threads: u64,
        #[arg(long, value_enum, default_value_t = AdviceArg::Dontneed)]
        advice: AdviceArg,
        /// Extra calls on a closed descriptor: each fails with EBADF.
        #[arg(long, default_value_t = 0)]
        bad_fd_calls: u64,
        /// Extra calls of the same advice through io_uring (IORING_OP_FADVISE), after the
        /// syscalls; each must succeed.
        #[arg(long, default_value_t = 0)]
        io_uring_calls: u64,
        /// Extra io_uring calls with an advice the kernel does not define: each fails with
        /// EINVAL, and counts under advice "other".
        #[arg(long, default_value_t = 0)]
        io_uring_invalid_calls: u64,
        /// Spread the calls over at least this long (e.g. 500ms), to span several drains.
        #[arg(long, value_parser = sidecar_common::duration::parse)]
        over: Option<Duration>,
        /// File to advise on (a temporary file when absent).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Wait for a line (or EOF) on stdin before the first call.
        #[arg(long)]
        wait_stdin: bool,
    },
    /// Reads a file sequentially, reporting how many of its pages were cached before.
    Read {
        #[arg(long)]
        file: PathBuf,
        /// Bytes per read call.
        #[arg(long, default_value_t = 1 << 20)]
        block_size: usize,
        /// Read the file this many times.
        #[arg(long, default_value_t = 1)]
        passes: u32,
    },
    /// Exactly known reads, dirtied pages and syncs, from a forked child named
    /// --child-comm that does nothing else (see file_io.rs): it writes --dirty-pages pages
    /// into a new --file, calls fsync and fdatasync --syncs times each, then makes --reads
    /// reads of --read-size bytes, in turn read, pread64, readv and preadv.
    Io {
        #[arg(long)]
        child_comm: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value_t = 256)]
        dirty_pages: u64,
        /// Bytes per write call (large writes make large folios where the filesystem can).
        #[arg(long, default_value_t = 64 << 10)]
        write_size: usize,
        #[arg(long, default_value_t = 1)]
        syncs: u64,
        #[arg(long, default_value_t = 1000)]
        reads: u64,
        #[arg(long, default_value_t = 4096)]
        read_size: usize,
    },
    /// Writes a file of a given size and makes it cold: fsync, then POSIX_FADV_DONTNEED.
    MakeFile {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        mib: u64,
    },
    /// Reports how many of a file's pages are in the page cache (mincore), touching none.
    Resident {
        #[arg(long)]
        file: PathBuf,
    },
    /// Evicts a file from the page cache (fsync + POSIX_FADV_DONTNEED) and reports residency.
    Evict {
        #[arg(long)]
        file: PathBuf,
    },
    /// Writes `count` files of `kib` KiB into `dir` (job-00000, ...) and evicts them.
    MakeFiles {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        kib: u64,
    },
    /// A job worker: claims jobs one after another; each job reads one of the files in
    /// `dir` (made by make-files) and drops it from the cache (POSIX_FADV_DONTNEED).
    JobWorker {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        jobs: u64,
        /// Bytes per read call.
        #[arg(long, default_value_t = 128 << 10)]
        block_size: usize,
        /// Spread the jobs over at least this long.
        #[arg(long, value_parser = sidecar_common::duration::parse)]
        over: Option<Duration>,
    },
    /// A sync worker: pages through `source` sequentially (POSIX_FADV_SEQUENTIAL once,
    /// POSIX_FADV_WILLNEED ahead of each page) and upserts each page into `output`.
    SyncWorker {
        #[arg(long)]
        source: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// Bytes per page of the upstream "API".
        #[arg(long, default_value_t = 1 << 20)]
        page_size: usize,
        /// Spread the pages over at least this long.
        #[arg(long, value_parser = sidecar_common::duration::parse)]
        over: Option<Duration>,
    },
    /// Forks short-lived processes that each make a few fadvise calls and exit.
    Churn {
        #[arg(long, default_value_t = 1000)]
        processes: u64,
        #[arg(long, default_value_t = 3)]
        calls_per_process: u64,
        #[arg(long, value_enum, default_value_t = AdviceArg::Random)]
        advice: AdviceArg,
    },
    /// BPF run time per call from the kernel's statistics, around a loop of calls; with
    /// --floor, of empty programs attached where asked (see bpf_cost.rs).
    BpfCost {
        #[arg(long, value_enum)]
        op: bpf_cost::Op,
        #[arg(long, default_value_t = 300_000)]
        calls: u64,
        /// tracepoint:CATEGORY:EVENT, raw_tracepoint:EVENT, tp_btf:EVENT or fexit:FUNCTION
        /// (repeatable).
        #[arg(long, value_parser = bpf_cost::parse_floor)]
        floor: Vec<bpf_cost::Floor>,
        /// Measure the programs this process holds instead (the sidecar, bpftrace).
        #[arg(long)]
        owner: Option<u32>,
        /// The file to pread (cached first); a new one in /var/tmp when absent.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Forks long-lived processes that each make one fadvise call per period until the time
    /// is up: a steady set of tracked processes, all active in every interval.
    Fleet {
        #[arg(long, default_value_t = 1000)]
        processes: u64,
        #[arg(long, value_parser = sidecar_common::duration::parse, default_value = "1s")]
        every: Duration,
        #[arg(long, value_parser = sidecar_common::duration::parse, default_value = "10s")]
        over: Duration,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum AdviceArg {
    Normal,
    Random,
    Sequential,
    Willneed,
    Dontneed,
    Noreuse,
}

impl AdviceArg {
    const fn raw(self) -> libc::c_int {
        match self {
            AdviceArg::Normal => libc::POSIX_FADV_NORMAL,
            AdviceArg::Random => libc::POSIX_FADV_RANDOM,
            AdviceArg::Sequential => libc::POSIX_FADV_SEQUENTIAL,
            AdviceArg::Willneed => libc::POSIX_FADV_WILLNEED,
            AdviceArg::Dontneed => libc::POSIX_FADV_DONTNEED,
            AdviceArg::Noreuse => libc::POSIX_FADV_NOREUSE,
        }
    }

    const fn label(self) -> &'static str {
        match self {
            AdviceArg::Normal => "normal",
            AdviceArg::Random => "random",
            AdviceArg::Sequential => "sequential",
            AdviceArg::Willneed => "willneed",
            AdviceArg::Dontneed => "dontneed",
            AdviceArg::Noreuse => "noreuse",
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    set_comm(&cli.comm)?;
    let report = match cli.mode {
        Mode::Fadvise {
            calls,
            threads,
            advice,
            bad_fd_calls,
            io_uring_calls,
            io_uring_invalid_calls,
            over,
            file,
            wait_stdin,
        } => {
            if wait_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
            }
            let mut report = fadvise(calls, threads, advice, bad_fd_calls, over, file.as_deref())?;
            if io_uring_calls + io_uring_invalid_calls > 0 {
                report["io_uring"] =
                    io_uring_fadvise(advice, io_uring_calls, io_uring_invalid_calls);
            }
            report
        }
        Mode::Read {
            file,
            block_size,
            passes,
        } => read(&file, block_size, passes)?,
        Mode::MakeFile { file, mib } => make_file(&file, mib)?,
        Mode::Io {
            child_comm,
            file,
            dirty_pages,
            write_size,
            syncs,
            reads,
            read_size,
        } => file_io::run(&file_io::Plan {
            comm: &child_comm,
            file: &file,
            dirty_pages,
            write_size,
            syncs,
            reads,
            read_size,
        })?,
        Mode::BpfCost {
            op,
            calls,
            floor,
            owner,
            file,
        } => bpf_cost::bpf_cost(op, calls, &floor, owner, file.as_deref())?,
        Mode::Resident { file } => {
            json!({ "pages": file_pages(&file)?, "resident_pages": resident_pages(&file)? })
        }
        Mode::Evict { file } => {
            evict(&file)?;
            json!({ "resident_pages_after": resident_pages(&file)?, "pages": file_pages(&file)? })
        }
        Mode::Churn {
            processes,
            calls_per_process,
            advice,
        } => churn(processes, calls_per_process, advice)?,
        Mode::Fleet {
            processes,
            every,
            over,
        } => fleet(processes, every, over)?,
        Mode::MakeFiles { dir, count, kib } => make_files(&dir, count, kib)?,
        Mode::JobWorker {
            dir,
            jobs,
            block_size,
            over,
        } => job_worker(&dir, jobs, block_size, over)?,
        Mode::SyncWorker {
            source,
            output,
            page_size,
            over,
        } => sync_worker(&source, &output, page_size, over)?,
    };
    println!("{report}");
    if let Some(linger) = cli.linger {
        use std::io::Write as _;
        std::io::stdout().flush()?;
        std::thread::sleep(linger);
    }
    Ok(())
}

fn set_comm(comm: &str) -> Result<()> {
    if comm.len() > 15 {
        bail!("--comm {comm:?} is longer than the kernel's 15 bytes");
    }
    let name = CString::new(comm)?;
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    let ret = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    if ret != 0 {
        bail!("prctl(PR_SET_NAME): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn posix_fadvise(fd: libc::c_int, advice: libc::c_int) -> libc::c_int {
    // SAFETY: a plain syscall; a bad fd yields EBADF.
    unsafe { libc::posix_fadvise(fd, 0, 4096, advice) }
}

fn fadvise(
    calls: u64,
    threads: u64,
    advice: AdviceArg,
    bad_fd_calls: u64,
    over: Option<Duration>,
    file: Option<&Path>,
) -> Result<serde_json::Value> {
    let _temp;
    let path = match file {
        Some(path) => path.to_owned(),
        None => {
            _temp = tempfile::NamedTempFile::new()?;
            _temp.as_file().write_all(&[0u8; 4096])?;
            _temp.path().to_owned()
        }
    };
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let fd = file.as_raw_fd();
    let threads = threads.max(1);
    let started = Instant::now();
    let deadline_per_call = over.map(|d| d.as_secs_f64() / (calls.max(1) as f64 / threads as f64));
    let results: Vec<Result<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let share = calls / threads + u64::from(t < calls % threads);
                scope.spawn(move || -> Result<u64> {
                    let begin = Instant::now();
                    for i in 0..share {
                        let ret = posix_fadvise(fd, advice.raw());
                        if ret != 0 {
                            bail!(
                                "posix_fadvise failed: {}",
                                std::io::Error::from_raw_os_error(ret)
                            );
                        }
                        if let Some(per_call) = deadline_per_call {
                            let due = begin + Duration::from_secs_f64(per_call * (i + 1) as f64);
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                        }
                    }
                    Ok(share)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))
            })
            .collect()
    });
    let mut succeeded = 0;
    for result in results {
        succeeded += result?;
    }
    // A descriptor that is certainly closed: open and close one.
    let closed = File::open(&path)?.as_raw_fd();
    let mut failed = 0;
    for _ in 0..bad_fd_calls {
        if posix_fadvise(closed, advice.raw()) == libc::EBADF {
            failed += 1;
        }
    }
    if failed != bad_fd_calls {
        bail!("only {failed} of {bad_fd_calls} bad-fd calls failed with EBADF");
    }
    Ok(json!({
        "pid": std::process::id(),
        "advice": advice.label(),
        "calls": succeeded + failed,
        "successes": succeeded,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

/// An advice no kernel defines: vfs_fadvise answers EINVAL.
const UNDEFINED_ADVICE: i32 = 99;

/// fadvise calls through io_uring on a temporary file: `valid` of `advice`, then `invalid`
/// of an undefined advice. Reports what each call returned, or why io_uring could not be
/// used (a kernel without it, or with it disabled); a call that did not answer as expected
/// is reported, not hidden.
fn io_uring_fadvise(advice: AdviceArg, valid: u64, invalid: u64) -> serde_json::Value {
    match io_uring_calls(advice, valid, invalid) {
        Ok((successes, failures)) => json!({
            "calls": valid + invalid,
            "successes": successes,
            "einval": failures,
            "ok": successes == valid && failures == invalid,
        }),
        Err(err) => json!({ "unavailable": format!("{err:#}") }),
    }
}

fn io_uring_calls(advice: AdviceArg, valid: u64, invalid: u64) -> Result<(u64, u64)> {
    use io_uring::{IoUring, opcode, types};
    const DEPTH: u32 = 64;
    let mut file = tempfile::tempfile()?;
    file.write_all(&[0u8; 4096])?;
    let mut ring = IoUring::new(DEPTH).context("io_uring_setup")?;
    let fd = types::Fd(file.as_raw_fd());
    let (mut successes, mut failures) = (0, 0);
    let mut left = valid + invalid;
    let mut submitted = 0u64;
    while left > 0 {
        let batch = left.min(u64::from(DEPTH));
        for _ in 0..batch {
            let advice = if submitted < valid {
                advice.raw()
            } else {
                UNDEFINED_ADVICE
            };
            let entry = opcode::Fadvise::new(fd, 4096, advice)
                .build()
                .user_data(submitted);
            // SAFETY: the entry refers to no buffer; the file outlives the ring's use of it.
            unsafe { ring.submission().push(&entry) }.context("io_uring queue full")?;
            submitted += 1;
        }
        ring.submit_and_wait(batch as usize)
            .context("io_uring_enter")?;
        for completion in ring.completion() {
            match completion.result() {
                0 if completion.user_data() < valid => successes += 1,
                res if res == -libc::EINVAL && completion.user_data() >= valid => failures += 1,
                res => bail!(
                    "io_uring fadvise #{} returned {}",
                    completion.user_data(),
                    std::io::Error::from_raw_os_error(-res)
                ),
            }
        }
        left -= batch;
    }
    Ok((successes, failures))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

fn file_pages(path: &Path) -> Result<u64> {
    let len = std::fs::metadata(path)?.len();
    Ok(len.div_ceil(page_size()))
}

/// Pages of the file in the page cache, by mincore(2): the kernel's own answer.
fn resident_pages(path: &Path) -> Result<u64> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let len_usize = usize::try_from(len)?;
    // SAFETY: a read-only shared mapping of a file we hold open; unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len_usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        bail!("mmap: {}", std::io::Error::last_os_error());
    }
    let pages = usize::try_from(len.div_ceil(page_size()))?;
    let mut vec = vec![0u8; pages];
    // SAFETY: `vec` has one byte per page of the mapping.
    let ret = unsafe { libc::mincore(addr, len_usize, vec.as_mut_ptr()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(addr, len_usize) };
    if ret != 0 {
        bail!("mincore: {err}");
    }
    Ok(vec.iter().filter(|&&b| b & 1 != 0).count() as u64)
}

fn evict(path: &Path) -> Result<()> {
    let file = File::open(path)?;
    file.sync_all()?;
    let ret = posix_fadvise_range(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    if ret != 0 {
        bail!(
            "posix_fadvise(DONTNEED): {}",
            std::io::Error::from_raw_os_error(ret)
        );
    }
    Ok(())
}

fn posix_fadvise_range(fd: libc::c_int, offset: i64, len: i64, advice: libc::c_int) -> libc::c_int {
    // SAFETY: a plain syscall.
    unsafe { libc::posix_fadvise(fd, offset, len, advice) }
}

fn make_file(path: &Path, mib: u64) -> Result<serde_json::Value> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let block = vec![0x5au8; 1 << 20];
    for _ in 0..mib {
        file.write_all(&block)?;
    }
    drop(file);
    evict(path)?;
    Ok(json!({ "pages": file_pages(path)?, "resident_pages_after": resident_pages(path)? }))
}

fn read(path: &Path, block_size: usize, passes: u32) -> Result<serde_json::Value> {
    let pages = file_pages(path)?;
    let resident_before = resident_pages(path)?;
    let mut buffer = vec![0u8; block_size.max(1)];
    let mut bytes = 0u64;
    let mut reads = 0u64;
    for _ in 0..passes {
        let mut file = File::open(path)?;
        loop {
            let n = file.read(&mut buffer)?;
            reads += 1;
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
    }
    Ok(json!({
        "pid": std::process::id(),
        "pages": pages,
        "resident_pages_before": resident_before,
        "bytes": bytes,
        "read_calls": reads,
    }))
}

/// Sleeps until the `done`-th of `total` steps is due, for work spread over `over`.
fn pace(started: Instant, over: Option<Duration>, done: u64, total: u64) {
    if let Some(over) = over {
        let due = started + over.mul_f64(done as f64 / total.max(1) as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

fn job_file(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("job-{index:05}"))
}

fn make_files(dir: &Path, count: u64, kib: u64) -> Result<serde_json::Value> {
    std::fs::create_dir_all(dir)?;
    let content = vec![0x6au8; usize::try_from(kib)? << 10];
    let mut pages = 0;
    for index in 0..count {
        let path = job_file(dir, index);
        std::fs::write(&path, &content)?;
        evict(&path)?;
        pages += file_pages(&path)?;
    }
    Ok(json!({ "files": count, "pages": pages }))
}

fn job_worker(
    dir: &Path,
    jobs: u64,
    block_size: usize,
    over: Option<Duration>,
) -> Result<serde_json::Value> {
    let files = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("job-"))
        .count() as u64;
    if files == 0 {
        bail!("no job files in {} (run make-files first)", dir.display());
    }
    let started = Instant::now();
    let mut buffer = vec![0u8; block_size.max(1)];
    let (mut bytes, mut pages, mut cached_before) = (0u64, 0u64, 0u64);
    for job in 0..jobs {
        let path = job_file(dir, job % files);
        cached_before += resident_pages(&path)?;
        pages += file_pages(&path)?;
        let mut file = File::open(&path)?;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
        let ret = posix_fadvise_range(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        if ret != 0 {
            bail!(
                "posix_fadvise(DONTNEED): {}",
                std::io::Error::from_raw_os_error(ret)
            );
        }
        pace(started, over, job + 1, jobs);
    }
    Ok(json!({
        "pid": std::process::id(),
        "jobs": jobs,
        "dontneed_calls": jobs,
        "bytes": bytes,
        "pages": pages,
        "resident_pages_before": cached_before,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

fn sync_worker(
    source: &Path,
    output: &Path,
    page_size: usize,
    over: Option<Duration>,
) -> Result<serde_json::Value> {
    use std::os::unix::fs::FileExt as _;
    let started = Instant::now();
    let input = File::open(source).with_context(|| format!("opening {}", source.display()))?;
    let length = input.metadata()?.len();
    let out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(output)?;
    let fd = input.as_raw_fd();
    let check = |ret: libc::c_int, what: &str| -> Result<()> {
        if ret == 0 {
            Ok(())
        } else {
            bail!(
                "posix_fadvise({what}): {}",
                std::io::Error::from_raw_os_error(ret)
            )
        }
    };
    check(
        posix_fadvise_range(fd, 0, 0, libc::POSIX_FADV_SEQUENTIAL),
        "SEQUENTIAL",
    )?;
    let chunk = page_size.max(1);
    let chunks = length.div_ceil(chunk as u64);
    let mut buffer = vec![0u8; chunk];
    let mut read_bytes = 0u64;
    for index in 0..chunks {
        let offset = index * chunk as u64;
        let len = (length - offset).min(chunk as u64);
        // Ask for the next page of the upstream before processing this one.
        check(
            posix_fadvise_range(
                fd,
                i64::try_from(offset)?,
                i64::try_from(len)?,
                libc::POSIX_FADV_WILLNEED,
            ),
            "WILLNEED",
        )?;
        let len = usize::try_from(len)?;
        input.read_exact_at(&mut buffer[..len], offset)?;
        read_bytes += len as u64;
        out.write_all_at(&buffer[..len], offset)?;
        pace(started, over, index + 1, chunks);
    }
    out.sync_all()?;
    Ok(json!({
        "pid": std::process::id(),
        "sequential_calls": 1,
        "willneed_calls": chunks,
        "bytes": read_bytes,
        "pages": file_pages(source)?,
        "output_pages": file_pages(output)?,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

fn churn(processes: u64, calls_per_process: u64, advice: AdviceArg) -> Result<serde_json::Value> {
    let file = tempfile::tempfile()?;
    let fd = file.as_raw_fd();
    let started = Instant::now();
    let mut exited_ok = 0u64;
    // Keep a few children in flight at once, like a busy worker pool.
    const IN_FLIGHT: usize = 8;
    let mut children: Vec<libc::pid_t> = Vec::with_capacity(IN_FLIGHT);
    let mut reap = |children: &mut Vec<libc::pid_t>, all: bool| -> Result<()> {
        while !children.is_empty() && (all || children.len() >= IN_FLIGHT) {
            let mut status = 0;
            // SAFETY: waits for any child of ours.
            let pid = unsafe { libc::waitpid(-1, &raw mut status, 0) };
            if pid < 0 {
                bail!("waitpid: {}", std::io::Error::last_os_error());
            }
            children.retain(|&c| c != pid);
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                exited_ok += 1;
            }
        }
        Ok(())
    };
    for _ in 0..processes {
        reap(&mut children, false)?;
        // SAFETY: the child only makes syscalls and _exits: nothing that needs the parent's
        // other threads (this program is single-threaded here).
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => bail!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                let mut ok = true;
                for _ in 0..calls_per_process {
                    ok &= posix_fadvise(fd, advice.raw()) == 0;
                }
                // SAFETY: leave without running the parent's atexit handlers.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            child => children.push(child),
        }
    }
    reap(&mut children, true)?;
    if exited_ok != processes {
        bail!("{} of {processes} children failed", processes - exited_ok);
    }
    Ok(json!({
        "processes": processes,
        "advice": advice.label(),
        "calls": processes * calls_per_process,
        "successes": processes * calls_per_process,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

fn fleet(processes: u64, every: Duration, over: Duration) -> Result<serde_json::Value> {
    let file = tempfile::tempfile()?;
    let fd = file.as_raw_fd();
    let started = Instant::now();
    let until = started + over;
    let mut children: Vec<libc::pid_t> = Vec::new();
    for index in 0..processes {
        // SAFETY: the child only makes syscalls, sleeps and _exits (single-threaded parent).
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => {
                for &child in &children {
                    // SAFETY: our own children.
                    unsafe { libc::kill(child, libc::SIGKILL) };
                }
                bail!("fork: {}", std::io::Error::last_os_error());
            }
            0 => {
                // Spread the calls over the period instead of all at once.
                let offset = every.mul_f64((index % 1000) as f64 / 1000.0);
                std::thread::sleep(offset);
                let mut ok = true;
                while Instant::now() < until {
                    ok &= posix_fadvise(fd, libc::POSIX_FADV_NORMAL) == 0;
                    std::thread::sleep(every);
                }
                // SAFETY: leave without running the parent's atexit handlers.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            child => children.push(child),
        }
    }
    let forked = started.elapsed();
    let mut exited_ok = 0u64;
    for _ in 0..children.len() {
        let mut status = 0;
        // SAFETY: waits for any child of ours.
        let pid = unsafe { libc::waitpid(-1, &raw mut status, 0) };
        if pid < 0 {
            bail!("waitpid: {}", std::io::Error::last_os_error());
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            exited_ok += 1;
        }
    }
    if exited_ok != processes {
        bail!("{} of {processes} processes failed", processes - exited_ok);
    }
    Ok(json!({
        "processes": processes,
        "every_seconds": every.as_secs_f64(),
        "fork_seconds": forked.as_secs_f64(),
        "seconds": started.elapsed().as_secs_f64(),
    }))
}
