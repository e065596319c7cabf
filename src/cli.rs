//! The command line: `serve` (the default), `refresh-views`, `init`, `accounts create` and
//! `users create`. Results are printed as one JSON object on stdout, progress on stderr.
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::admin::{self, NewAccount, NewUser};
use crate::config::{Backend, Config};
use crate::domain::ids::{AccountId, DbName};
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
    /// Create the token signing material as Kazoo keeps it, where it is missing.
    Init,
    /// Manage accounts.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Manage users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account: its database, design documents and account document.
    Create(AccountArgs),
}

#[derive(Debug, Args)]
pub struct AccountArgs {
    #[arg(long)]
    pub name: String,
    /// The parent account (default: the master account; the first account becomes master).
    #[arg(long)]
    pub parent: Option<String>,
    /// SIP realm (default: a random `<6 hex>.sip.2600hz.com`).
    #[arg(long)]
    pub realm: Option<String>,
    /// Mark the account `pvt_superduper_admin`.
    #[arg(long)]
    pub superduper_admin: bool,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user who can log in with `PUT /v2/user_auth`.
    Create(UserArgs),
}

#[derive(Debug, Args)]
pub struct UserArgs {
    #[arg(long)]
    pub account: String,
    #[arg(long)]
    pub username: String,
    #[arg(long)]
    pub password: String,
    #[arg(long)]
    pub first_name: Option<String>,
    #[arg(long)]
    pub last_name: Option<String>,
    #[arg(long)]
    pub email: Option<String>,
    /// `admin` or `user`.
    #[arg(long, default_value = "admin", value_parser = ["admin", "user"])]
    pub priv_level: String,
}

fn account_arg(flag: &str, raw: &str) -> Result<AccountId, String> {
    AccountId::parse(raw)
        .map_err(|_| format!("{flag} {raw:?} is not an account id (32 lower-case hex)"))
}

fn print(value: Value) {
    println!("{value}");
}

pub async fn run(cli: Cli) -> Result<(), String> {
    let config = Config::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let store = startup::store(&config)?;
            // Standalone, the signing material is created on first start; next to a shared
            // Kazoo (CouchDB), only `kz-groups init` may create it.
            if let Backend::Embedded { dir } = &config.backend {
                let report = admin::init(&store).await?;
                for what in &report.created {
                    log::info!("created {what} in {}", dir.display());
                }
            }
            let described = store.describe();
            let app = Application::build_with_store(config.clone(), store)?;
            log::info!(
                "kz-groups listening on port {} (KZ_GROUPS_LISTEN={}), {described}",
                app.port(),
                config.listen,
            );
            app.run_until_stopped().await.map_err(|e| e.to_string())
        }
        Command::RefreshViews => refresh_views(&config).await.map(|_| ()),
        Command::Init => {
            let store = startup::store(&config)?;
            let report = admin::init(&store).await?;
            for what in &report.created {
                eprintln!("init: created {what}");
            }
            if report.created.is_empty() {
                eprintln!("init: signing material already present, nothing changed");
            }
            print(json!({"kid": report.kid, "created": report.created}));
            Ok(())
        }
        Command::Accounts {
            command: AccountsCommand::Create(args),
        } => {
            let store = startup::store(&config)?;
            let new = NewAccount {
                name: args.name,
                realm: args.realm,
                parent: args
                    .parent
                    .as_deref()
                    .map(|p| account_arg("--parent", p))
                    .transpose()?,
                superduper_admin: args.superduper_admin,
            };
            let doc = announcing(&config, |notifier| async move {
                admin::create_account(&store, &startup::design_docs()?, notifier.as_ref(), &new)
                    .await
            })
            .await?;
            print(json!({
                "account_id": doc["_id"],
                "api_key": doc["pvt_api_key"],
                "name": doc["name"],
                "realm": doc["realm"],
                "account_db": doc["pvt_account_db"],
            }));
            Ok(())
        }
        Command::Users {
            command: UsersCommand::Create(args),
        } => {
            let store = startup::store(&config)?;
            let new = NewUser {
                account: Some(account_arg("--account", &args.account)?),
                username: args.username,
                password: args.password,
                first_name: args.first_name,
                last_name: args.last_name,
                email: args.email,
                priv_level: args.priv_level,
            };
            let doc = announcing(&config, |notifier| async move {
                admin::create_user(&store, &startup::design_docs()?, notifier.as_ref(), &new).await
            })
            .await?;
            print(json!({
                "id": doc["_id"],
                "user_id": doc["_id"],
                "account_id": doc["pvt_account_id"],
                "username": doc["username"],
            }));
            Ok(())
        }
    }
}

/// Runs a provisioning step with the notifier the configuration names; with a bus, waits (for
/// `KZ_GROUPS_AMQP_FLUSH_SECS` at most) until the broker confirmed its notices before the
/// process exits. Notices still undelivered then are reported, not turned into a failure: the
/// documents are written, and running the step again would create a second account.
async fn announcing<T, F, Fut>(config: &Config, step: F) -> Result<T, String>
where
    F: FnOnce(std::sync::Arc<dyn crate::notices::ChangeNotifier>) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let (notifier, bus) = startup::notifier(config);
    let outcome = step(notifier).await;
    if let Some(bus) = bus {
        let left = bus.shutdown().await;
        if left > 0 {
            eprintln!(
                "warning: {left} change notices could not be delivered to the AMQP broker; \
                 Kazoo nodes may serve cached copies until their cache entries expire"
            );
        }
    }
    outcome
}

/// Brings the design documents of every account database up to date, with progress on stderr.
/// Returns how many account databases were visited.
pub async fn refresh_views(config: &Config) -> Result<usize, String> {
    let store = startup::store(config)?;
    let designs = startup::design_docs()?;
    let dbs = store
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
            match ensure_design(&store, &accounts_db, design).await {
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
            match ensure_design(&store, &db, design).await {
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

fn describe(outcome: Refresh) -> String {
    match outcome {
        Refresh::Unchanged => "unchanged".into(),
        Refresh::Created => "created".into(),
        Refresh::Updated => "updated".into(),
        Refresh::NotOurs { missing } if missing.is_empty() => {
            "not installed by kz-groups: left as it is".into()
        }
        Refresh::NotOurs { missing } => format!(
            "not installed by kz-groups: left as it is; lacks {}, read without a design document",
            missing.join(", ")
        ),
    }
}
