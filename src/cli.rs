//! The command line: `serve` (the default) and `refresh-views`.
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::domain::ids::DbName;
use crate::startup::{self, Application};
use crate::store::views::{ensure_design, DesignDb, Refresh};

#[derive(Debug, Parser)]
#[command(
    name = "kz-groups",
    version,
    about = "Kazoo Crossbar-compatible Groups API over CouchDB"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Install or update the design documents in every account database.
    RefreshViews,
}

pub async fn run(cli: Cli) -> Result<(), String> {
    let config = Config::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(config.clone())?;
            log::info!(
                "kz-groups listening on port {} (KZ_GROUPS_LISTEN={})",
                app.port(),
                config.listen
            );
            app.run_until_stopped().await.map_err(|e| e.to_string())
        }
        Command::RefreshViews => refresh_views(&config).await.map(|_| ()),
    }
}

/// Brings the design documents of every account database up to date, with progress on stderr.
/// Returns how many account databases were visited.
pub async fn refresh_views(config: &Config) -> Result<usize, String> {
    let couch = startup::couch_client(config)?;
    let designs = startup::design_docs()?;
    let dbs = couch
        .all_dbs()
        .await
        .map_err(|e| format!("listing databases: {e}"))?;
    let accounts: Vec<_> = dbs
        .iter()
        .filter_map(|db| DbName::parse_account_db(db))
        .collect();
    eprintln!("refresh-views: {} account databases", accounts.len());
    let mut failed = 0;
    let accounts_db = DbName::system(DbName::ACCOUNTS);
    if dbs.iter().any(|db| db == DbName::ACCOUNTS) {
        for design in designs.iter().filter(|d| d.database == DesignDb::Accounts) {
            match ensure_design(&couch, &accounts_db, design).await {
                Ok(outcome) => {
                    eprintln!(
                        "{accounts_db} _design/{}: {}",
                        design.name,
                        describe(outcome)
                    )
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("{accounts_db} _design/{}: FAILED: {e}", design.name);
                }
            }
        }
    }
    for (n, account) in accounts.iter().enumerate() {
        let db = account.db();
        for design in designs.iter().filter(|d| d.database == DesignDb::Account) {
            match ensure_design(&couch, &db, design).await {
                Ok(outcome) => {
                    let what = describe(outcome);
                    eprintln!(
                        "[{}/{}] {db} _design/{}: {what}",
                        n + 1,
                        accounts.len(),
                        design.name
                    );
                }
                Err(e) => {
                    failed += 1;
                    eprintln!(
                        "[{}/{}] {db} _design/{}: FAILED: {e}",
                        n + 1,
                        accounts.len(),
                        design.name
                    );
                }
            }
        }
    }
    if failed > 0 {
        return Err(format!(
            "refresh-views: {failed} design documents could not be written"
        ));
    }
    eprintln!("refresh-views: done");
    Ok(accounts.len())
}

fn describe(outcome: Refresh) -> &'static str {
    match outcome {
        Refresh::Unchanged => "unchanged",
        Refresh::Created => "created",
        Refresh::Updated => "updated",
    }
}
