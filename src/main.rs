use clap::Parser;

use kz_groups::config::{Config, LogFormat};

fn main() -> std::process::ExitCode {
    // Before any thread starts: the allocator's settings apply to every heap.
    kz_groups::pipeline::memory::set_up_allocator();
    // `--help` and `--version` answer before anything is read or created.
    let cli = kz_groups::cli::Cli::parse();
    let format = LogFormat::from_lookup(|name| std::env::var(name).ok());
    kz_groups::pipeline::request::set_log_format(format.clone().unwrap_or_default());
    env_logger::Builder::new()
        .parse_filters(&kz_groups::config::log_filter(
            std::env::var("RUST_LOG").ok().as_deref(),
        ))
        .format(kz_groups::pipeline::request::log_line)
        .init();
    // The whole configuration is checked before any side effect (data directory, keys, bind).
    let outcome = format
        .clone()
        .and_then(|_| Config::from_env())
        .and_then(|config| actix_web::rt::System::new().block_on(kz_groups::cli::run(cli, config)));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Once: as a log record where logs are JSON lines, else as a plain line on stderr.
            match format {
                Ok(LogFormat::Json) => log::error!("{e}"),
                _ => eprintln!("kz-groups: {e}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}
