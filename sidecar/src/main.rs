use std::process::ExitCode;

use clap::Parser as _;
use sidecar::{
    check,
    cli::{Cli, Command},
    config::Config,
    query, run,
    startup::EXIT_CONFIG,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let mut config = match load_config(args.config.as_deref()) {
                Ok(config) => config,
                Err(code) => return code,
            };
            args.apply(&mut config);
            if let Err(code) = check_paths(&config, args.config.as_deref()) {
                return code;
            }
            sidecar::logging::init(&config.log);
            run::run(config)
        }
        Command::Check(args) => {
            let config = match load_config(args.config.as_deref()) {
                Ok(config) => config,
                Err(code) => return code,
            };
            if let Err(code) = check_paths(&config, args.config.as_deref()) {
                return code;
            }
            check::check(&config)
        }
        Command::Query(args) => query::query(args),
    }
}

/// The places on disk the configuration names, checked before anything is attached.
fn check_paths(config: &Config, path: Option<&std::path::Path>) -> Result<(), ExitCode> {
    let text = path
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let file = path.map_or_else(|| "(defaults)".to_owned(), |p| p.display().to_string());
    config.check_paths(&text, &file).map_err(|err| {
        eprintln!("sidecar: bad configuration: {err}");
        ExitCode::from(EXIT_CONFIG)
    })
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
