//! Command line. Every flag of `run` can also be set in the configuration file; a flag wins.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Addr, Config, Interval, LogFormat, LogLevel};

#[derive(Debug, Parser)]
#[command(
    name = "sidecar",
    version,
    about = "eBPF observability of fadvise, the page cache and memory reclaim, per workload"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach the kernel programs and serve /metrics (and the gRPC API).
    Run(RunArgs),
    /// Report what this kernel and these privileges support, module by module; the exit
    /// status says whether `run` can work.
    Check(CheckArgs),
    /// Ask a running sidecar over its gRPC API.
    Query(QueryArgs),
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The sidecar's gRPC address (server.grpc_addr).
    #[arg(long, value_name = "ADDR", value_parser = Addr::parse, default_value = "127.0.0.1:50051")]
    pub addr: Addr,
    /// Connect with TLS, trusting this CA (PEM) for the server's certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM) when the sidecar requires them (server.tls.client_ca).
    #[arg(long, value_name = "FILE", requires = "key", requires = "ca")]
    pub cert: Option<std::path::PathBuf>,
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// The server name to verify in its certificate (default: localhost).
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    pub server_name: String,
    /// A file holding the bearer token the sidecar requires (server.token_file).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Print canonical proto JSON, one object per message, instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Deadline for each call (for `watch`: the whole stream), e.g. 5s.
    #[arg(long, value_name = "DUR", value_parser = parse_timeout)]
    pub timeout: Option<Timeout>,
    #[command(subcommand)]
    pub command: QueryCommand,
}

/// A call deadline.
#[derive(Debug, Clone, Copy)]
pub struct Timeout(pub std::time::Duration);

fn parse_timeout(text: &str) -> Result<Timeout, String> {
    crate::config::parse_duration(text).map(Timeout)
}

#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Version, kernel, modules, drains, overflow.
    Status,
    /// Cumulative metrics (every page).
    Metrics {
        /// fadvise, page_cache, vmscan, io, memcg or self (repeatable).
        #[arg(long)]
        module: Vec<String>,
        /// Metric name or pattern with `*` (repeatable).
        #[arg(long)]
        metric: Vec<String>,
        /// Workload name (repeatable).
        #[arg(long)]
        workload: Vec<String>,
        /// Metrics per call (1..=10000).
        #[arg(long, default_value_t = 500)]
        page_size: u32,
    },
    /// Per-workload I/O statistics of the last interval, or of a window.
    Iostats {
        #[arg(long)]
        workload: Vec<String>,
        /// Sum the intervals of the last DUR, e.g. 5m.
        #[arg(long, value_name = "DUR")]
        window: Option<String>,
    },
    /// One table per drain.
    Watch {
        #[arg(long)]
        workload: Vec<String>,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (YAML). Without it, the built-in defaults apply.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP listen address for /metrics and /health/* (server.metrics_addr).
    #[arg(long, value_name = "ADDR", value_parser = Addr::parse)]
    pub metrics_addr: Option<Addr>,
    /// gRPC listen address (server.grpc_addr).
    #[arg(long, value_name = "ADDR", value_parser = Addr::parse)]
    pub grpc_addr: Option<Addr>,
    /// Drain interval, e.g. 10s or 500ms (interval).
    #[arg(long, value_name = "DUR", value_parser = Interval::parse)]
    pub interval: Option<Interval>,
    /// Log level (log.level).
    #[arg(long, value_enum)]
    pub log_level: Option<LogLevel>,
    /// Log format (log.format).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Configuration file (YAML): which modules to check and whether tracefs may be mounted.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl RunArgs {
    /// Applies the flags over a configuration.
    pub fn apply(&self, config: &mut Config) {
        if let Some(addr) = self.metrics_addr {
            config.server.metrics_addr = addr;
        }
        if let Some(addr) = self.grpc_addr {
            config.server.grpc_addr = addr;
        }
        if let Some(interval) = self.interval {
            config.interval = interval;
        }
        if let Some(level) = self.log_level {
            config.log.level = level;
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn flags_override_the_file() {
        let cli = Cli::try_parse_from([
            "sidecar",
            "run",
            "--config",
            "x.yaml",
            "--interval",
            "250ms",
            "--metrics-addr",
            "127.0.0.1:1234",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected")
        };
        let mut config = Config::default();
        args.apply(&mut config);
        assert_eq!(config.interval.0, Duration::from_millis(250));
        assert_eq!(config.server.metrics_addr.0.port(), 1234);
        assert!(Cli::try_parse_from(["sidecar", "run", "--interval", "5"]).is_err());
        assert!(Cli::try_parse_from(["sidecar", "run", "--grpc-addr", "nope"]).is_err());
    }
}
