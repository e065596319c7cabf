//! The binary's subcommands (`init`, `accounts create`, `users create`, ...), run as an operator
//! runs them against a backend.
use std::process::Command;

use kz_groups::config::Backend;
use serde_json::Value;

/// What a run printed: its success, its standard output as JSON (`Null` if it is not JSON), and
/// everything it wrote, for failure messages.
pub struct CliRun {
    pub ok: bool,
    pub json: Value,
    pub output: String,
}

/// `kz-groups <args>` as a command against `backend`, the environment otherwise clean of
/// `COUCHDB_URL` and `KZ_GROUPS_COUCHDB_CA`, to add to before running.
pub fn command(backend: &Backend, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kz-groups"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("COUCHDB_URL")
        .env_remove("KZ_GROUPS_COUCHDB_CA");
    match backend {
        Backend::CouchDb { url } => cmd.env("COUCHDB_URL", url),
        Backend::Embedded { dir } => cmd.env("KZ_GROUPS_DATA", dir),
    };
    cmd
}

/// Runs `cmd` to its end.
pub fn run_command(cmd: &mut Command) -> CliRun {
    let out = cmd.output().expect("kz-groups runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    CliRun {
        ok: out.status.success(),
        json: serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
        output: format!("{stdout}{stderr}"),
    }
}

/// `kz-groups <args>` against `backend`.
pub fn run(backend: &Backend, args: &[&str]) -> CliRun {
    run_command(&mut command(backend, args))
}

/// `kz-groups <args>` against `backend`, which must succeed; its JSON output.
pub fn run_ok(backend: &Backend, args: &[&str]) -> Value {
    let run = run(backend, args);
    assert!(run.ok, "kz-groups {args:?} failed:\n{}", run.output);
    run.json
}
