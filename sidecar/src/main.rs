use std::process::ExitCode;

use clap::Parser as _;
use sidecar::{
    check,
    cli::{Cli, Command},
    config::Config,
    query, run,
};

/// Exit statuses (documented in docs/operations.md).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let mut config = match load_config(args.config.as_deref()) {
                Ok(config) => config,
                Err(code) => return code,
            };
            args.apply(&mut config);
            sidecar::logging::init(&config.log);
            run::run(config)
        }
        Command::Check(args) => {
            let config = match load_config(args.config.as_deref()) {
                Ok(config) => config,
                Err(code) => return code,
            };
            check::check(&config)
        }
        Command::Query(args) => query::query(args),
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    let Some(path) = path else {
        return Ok(Config::default());
    };
    Config::load(path).map_err(|err| {
        eprintln!("sidecar: bad configuration: {err}");
        ExitCode::from(EXIT_CONFIG)
    })
}
