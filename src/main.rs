use clap::Parser;

fn main() -> std::process::ExitCode {
    // Before any thread starts: the allocator's settings apply to every heap.
    kz_groups::pipeline::memory::set_up_allocator();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(
        // lapin's connection loop is a tracing span at error level: its enter/exit lines are noise.
        "info,tracing::span=off",
    ))
    .format(kz_groups::pipeline::request::log_line)
    .init();
    let cli = kz_groups::cli::Cli::parse();
    match actix_web::rt::System::new().block_on(kz_groups::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("kz-groups: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
