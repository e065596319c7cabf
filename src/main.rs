use clap::Parser;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(
        // lapin's connection loop is a tracing span at error level: its enter/exit lines are noise.
        "info,tracing::span=off",
    ))
    .init();
    match kz_groups::cli::run(kz_groups::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("kz-groups: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
