//! The command line: `serve` (the default), `refresh-views`, `init`, `accounts create` and
//! `users create`. Results are printed as one JSON object on stdout, progress on stderr.
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::admin::{self, NewAccount, NewUser};
use crate::config::{secret, Backend, Config};
use crate::doctor;
use crate::domain::ids::{AccountId, DbName};
use crate::startup::{self, Application};
use crate::store::views::{self, ensure_design, DesignDb, Refresh};
use crate::store::Store;

/// The variables every command reads: which store, and how logs look.
const STORE_ENV: &str = "\
Environment (store and logs):
  COUCHDB_URL                 CouchDB base URL with credentials, e.g. http://admin:secret@127.0.0.1:5984;
                              unset: the embedded store in KZ_GROUPS_DATA
  COUCHDB_URL_FILE            a file holding COUCHDB_URL (a Docker secret, a systemd credential);
                              not with COUCHDB_URL
  KZ_GROUPS_COUCHDB_CA        PEM file of CA certificates trusted for an https:// COUCHDB_URL,
                              besides the system's roots
  KZ_GROUPS_DATA              directory of the embedded store [default: ./data]
  KZ_GROUPS_COUCH_TIMEOUT_MS  timeout of every CouchDB call, in ms [default: 5000]
  KZ_GROUPS_VIEW_TIMEOUT_MS   how long a view query may wait for its index, in ms [default: 300000]
  RUST_LOG                    log filter [default: info]
  KZ_GROUPS_LOG_FORMAT        text or json (one JSON object a line) [default: text]";

/// What `accounts create` and `users create` read besides: the bus they announce writes on.
const BUS_ENV: &str = "  KZ_GROUPS_AMQP_URL          AMQP broker to announce the new documents on (amqp://…); unset: none
  KZ_GROUPS_AMQP_URL_FILE     a file holding KZ_GROUPS_AMQP_URL; not with KZ_GROUPS_AMQP_URL
  KZ_GROUPS_AMQP_FLUSH_SECS   how long to wait for the broker's confirms before exiting [default: 5]
  KZ_GROUPS_NODE              the notices' Node [default: kz-groups@<hostname>]";

const SERVE_ENV: &str = "\
Environment (server):
  KZ_GROUPS_LISTEN            address and port to listen on [default: 127.0.0.1:8000]
  KZ_GROUPS_CROSSBAR          the Crossbar line answered: 4.3 or master (listing order, page_size
                              fallback, is_chunked, envelope; see docs/crossbar-lines.md) [default: 4.3]
  KZ_GROUPS_PAGE_SIZE         default page_size of listings [default: 50]
  KZ_GROUPS_MAX_UPLOAD_BYTES  largest accepted request body [default: 8000000]
  KZ_GROUPS_NODE              node name hashed into the envelope's node [default: kz-groups@<hostname>]
  KZ_GROUPS_VERSION           the Kazoo version reported to clients [default: 4.3.0]
  KZ_GROUPS_KEY_CACHE_SECS    how long a signing key is trusted before its document is re-read [default: 0]
  KZ_GROUPS_TOKEN_CACHE_ENTRIES  tokens whose signature verified, kept (0: off) [default: 10000]
  KZ_GROUPS_DOC_CACHE_ENTRIES group documents cached (0: off) [default: 20000]
  KZ_GROUPS_DOC_CACHE_MB      their memory [default: 32]
  KZ_GROUPS_AUTH_CACHE_ENTRIES accounts, identities, restrictions, keys cached (0: off) [default: 10000]
  KZ_GROUPS_AUTH_CACHE_MB     their memory [default: 16]
  KZ_GROUPS_LISTING_CACHE_ENTRIES listing pages cached (0: off) [default: 1000]
  KZ_GROUPS_LISTING_CACHE_MB  their memory [default: 32]
  KZ_GROUPS_CACHE_FEEDS       databases followed one by one where CouchDB has no _db_updates (0: no feeds) [default: 200]
  KZ_GROUPS_CACHE_TTL_MS      how long an entry no change feed guards is kept [default: 1000]
  KZ_GROUPS_BODY_TIMEOUT_MS   time a request body has to arrive [default: 15000]
  KZ_GROUPS_REQUEST_MEMORY_MB memory request bodies may hold at once [default: 256]
  KZ_GROUPS_MAX_CONNECTIONS   simultaneous client connections [default: from the open-file limit]
  KZ_GROUPS_SHUTDOWN_GRACE_SECS  how long a stop lets requests in flight finish [default: 30]
  KZ_GROUPS_AMQP_URL          AMQP broker for change notices (amqp://…); unset: none
  KZ_GROUPS_AMQP_URL_FILE     a file holding KZ_GROUPS_AMQP_URL; not with KZ_GROUPS_AMQP_URL
  KZ_GROUPS_AMQP_QUEUE        notices held while the broker has not confirmed them [default: 10000]
  KZ_GROUPS_AMQP_FLUSH_SECS   how long a stopping server tries to deliver them [default: 5]";

#[derive(Debug, Parser)]
#[command(
    name = "kz-groups",
    version,
    about = "Kazoo Crossbar-compatible Groups API, over CouchDB or an embedded store",
    long_about = "Kazoo Crossbar-compatible Groups API, over CouchDB (COUCHDB_URL) or, when \
                  COUCHDB_URL is unset, an embedded store in KZ_GROUPS_DATA. Without a command, \
                  runs the server. Commands print their result as one JSON object on stdout and \
                  their progress on stderr.",
    after_help = concat!(
        "Environment (store and logs):\n",
        "  COUCHDB_URL (or COUCHDB_URL_FILE), KZ_GROUPS_COUCHDB_CA, KZ_GROUPS_DATA,\n",
        "  KZ_GROUPS_COUCH_TIMEOUT_MS, RUST_LOG, KZ_GROUPS_LOG_FORMAT\n",
        "The Crossbar line answered: KZ_GROUPS_CROSSBAR=4.3 (default) or master (see `serve --help`).\n",
        "Each command's --help lists every variable it reads."
    )
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    #[command(
        long_about = "Run the HTTP server: the Groups API, the logins, /healthz, /readyz, \
                      /metrics and /openapi.json. On the embedded store, creates the token \
                      signing material on first start; on CouchDB, run `kz-groups init` once \
                      first (the startup log and /readyz say when it is missing).",
        after_help = format!("{STORE_ENV}\n\n{SERVE_ENV}")
    )]
    Serve,
    /// Install or update the design documents in every account database.
    #[command(
        long_about = "Install the design documents missing from every account database (and \
                      from `accounts`) and update those kz-groups installed itself; Kazoo's are \
                      left as they are. Progress on stderr; prints {\"account_dbs\": N}.",
        after_help = STORE_ENV
    )]
    RefreshViews,
    /// Create the token signing material as Kazoo keeps it, where it is missing.
    #[command(
        long_about = "Create Kazoo's token signing material where it is missing: \
                      system_config/auth (system_key, secret_for_user_signature) and \
                      system_auth/<kid> with its private_key.pem. Existing material is never \
                      replaced. Prints {\"kid\": …, \"created\": [...]}.",
        after_help = STORE_ENV
    )]
    Init,
    /// Manage accounts: create, list, show.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Manage users: create, list.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Report an account's dangling group members; --fix removes those whose documents are gone.
    #[command(
        long_about = "Report an account's dangling group members, as GET \
                      /v2/accounts/{A}/groups/_account/dangling does: members whose documents \
                      are missing or soft-deleted, disabled users whose devices still ring, \
                      devices that never ring. Reads only, unless --fix: then the members whose \
                      documents are gone are removed, one revision-checked write per group, as \
                      a PATCH removes them (validated, stamped, announced on the bus with \
                      KZ_GROUPS_AMQP_URL); nothing else is changed. Prints {\"account_id\", \
                      \"groups_checked\", \"groups\", \"truncated\"} and with --fix \
                      {\"request_id\", \"changed\", \"failed\"}; a group that could not be \
                      fixed makes it exit 1.",
        after_help = format!("{STORE_ENV}\n{BUS_ENV}")
    )]
    Doctor(crate::doctor::DoctorArgs),
    /// Print a group's or an account's history (issue 18) as JSON lines, newest first.
    #[command(
        long_about = "Print the history of one group (--group) or of every group of an account, \
                      newest first, one JSON entry a line, as GET \
                      /v2/accounts/{A}/groups/{G}/history/{ENTRY} gives each (action, actor, \
                      revisions, changes, members, version); --since keeps the changes at or \
                      after a time (Gregorian seconds, or YYYY-MM-DDTHH:MM:SSZ). Reads only; \
                      the number of entries goes to stderr.",
        after_help = STORE_ENV
    )]
    History(crate::history_cli::HistoryArgs),
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account: its database, design documents and account document.
    #[command(
        long_about = "Create an account as Kazoo does: its database with the design documents, \
                      and the account document in it and in `accounts`. Prints \
                      {\"account_id\", \"api_key\", \"name\", \"realm\", \"account_db\"}.",
        after_help = format!("{STORE_ENV}\n{BUS_ENV}")
    )]
    Create(AccountArgs),
    /// List every account (without API keys).
    #[command(
        long_about = "List every account of the `accounts` database, by name. Prints \
                      {\"accounts\": [{\"account_id\", \"name\", \"realm\", ...}]}; API keys \
                      are left out (see `accounts show`).",
        after_help = STORE_ENV
    )]
    List,
    /// Show one account, with its API key.
    #[command(
        long_about = "Show one account from its own database, with its API key (for a lost \
                      key). Prints {\"account_id\", \"name\", \"realm\", \"api_key\", ...}.",
        after_help = STORE_ENV
    )]
    Show {
        /// The account id (32 lower-case hex).
        #[arg(value_name = "ACCOUNT_ID")]
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct AccountArgs {
    /// The account's name; unique in the store (compared as Kazoo does, letters and digits only).
    #[arg(long)]
    pub name: String,
    /// The parent account (default: the master account; the first account becomes master).
    #[arg(long, value_name = "ACCOUNT_ID")]
    pub parent: Option<String>,
    /// SIP realm, unique in the store (default: a random `<6 hex>.sip.2600hz.com`); users log in
    /// with it as `account_realm`.
    #[arg(long)]
    pub realm: Option<String>,
    /// Mark the account `pvt_superduper_admin`: its users may act on every account.
    #[arg(long)]
    pub superduper_admin: bool,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user who can log in with `PUT /v2/user_auth`.
    #[command(
        long_about = "Create a user who can log in with `PUT /v2/user_auth`. The password \
                      comes from --password-stdin (the first line of standard input), else \
                      --password (visible to other local users in the process list), else \
                      KZ_GROUPS_USER_PASSWORD or the file KZ_GROUPS_USER_PASSWORD_FILE names. Prints {\"id\", \"user_id\", \"account_id\", \"username\"}.",
        after_help = format!(
            "{STORE_ENV}\n  KZ_GROUPS_USER_PASSWORD     the new user's password (instead of --password)\n  \
             KZ_GROUPS_USER_PASSWORD_FILE  a file holding it; not with KZ_GROUPS_USER_PASSWORD\n{BUS_ENV}"
        )
    )]
    Create(UserArgs),
    /// List the users of an account (without credentials).
    #[command(
        long_about = "List the users of an account, by username. Prints {\"users\": [{\"id\", \
                      \"username\", \"first_name\", \"last_name\", \"email\", \"priv_level\", \
                      \"enabled\"}]}; no credential hash or secret.",
        after_help = STORE_ENV
    )]
    List {
        /// The account whose users to list.
        #[arg(long, value_name = "ACCOUNT_ID")]
        account: String,
    },
}

#[derive(Debug, Args)]
pub struct UserArgs {
    /// The account the user belongs to.
    #[arg(long, value_name = "ACCOUNT_ID")]
    pub account: String,
    /// The login name; stored lower-cased, unique in the account.
    #[arg(long)]
    pub username: String,
    /// The password (prefer --password-stdin or KZ_GROUPS_USER_PASSWORD: a command line is
    /// visible to every local user).
    #[arg(long, env = "KZ_GROUPS_USER_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Read the password from the first line of standard input (it wins over the others).
    #[arg(long)]
    pub password_stdin: bool,
    /// First name (default: the username).
    #[arg(long)]
    pub first_name: Option<String>,
    /// Last name (default: empty).
    #[arg(long)]
    pub last_name: Option<String>,
    /// E-mail address.
    #[arg(long)]
    pub email: Option<String>,
    /// `admin` or `user`.
    #[arg(long, default_value = "admin", value_parser = ["admin", "user"])]
    pub priv_level: String,
}

impl UserArgs {
    /// The password from standard input, the command line, the environment or the file
    /// `KZ_GROUPS_USER_PASSWORD_FILE` names.
    fn password(&self) -> Result<String, String> {
        // Read (and both forms refused) whichever source wins: a broken setting never passes
        // unnoticed. `self.password` already holds the variable's value, if it is set.
        let variable = secret(|name| std::env::var(name).ok(), "KZ_GROUPS_USER_PASSWORD")?;
        if self.password_stdin {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("--password-stdin: cannot read standard input: {e}"))?;
            let password = line.trim_end_matches(['\r', '\n']).to_owned();
            if password.is_empty() {
                return Err("--password-stdin: standard input held no password".into());
            }
            return Ok(password);
        }
        self.password.clone().or(variable).ok_or_else(|| {
            "a password is required: --password-stdin, KZ_GROUPS_USER_PASSWORD(_FILE) or --password"
                .into()
        })
    }
}

fn account_arg(flag: &str, raw: &str) -> Result<AccountId, String> {
    AccountId::parse(raw)
        .map_err(|_| format!("{flag} {raw:?} is not an account id (32 lower-case hex)"))
}

fn print(value: Value) {
    println!("{value}");
}

/// Runs a command with a configuration already checked (`Config::from_env`). Errors are
/// returned, to be printed once by the caller.
pub async fn run(cli: Cli, config: Config) -> Result<(), String> {
    // Parsed before the store is touched: a bad argument creates nothing.
    let task = Task::parse(cli.command.unwrap_or(Command::Serve))?;
    let store = match task {
        // A server outlives its store's outages: one at start is said, then answered 503
        // until the store is back. A command needs its store now.
        Task::Serve => {
            let store = startup::store(&config)?;
            if let Err(e) = startup::probe(&config, &store).await {
                log::error!("{e}; answering 503 until it answers");
            }
            store
        }
        _ => startup::open_store(&config).await?,
    };
    match task {
        Task::Serve => serve(config, store).await,
        Task::RefreshViews => {
            let visited = refresh_views(&store).await?;
            print(json!({ "account_dbs": visited }));
            Ok(())
        }
        Task::Init => init(&store).await,
        Task::CreateAccount(new) => create_account(&config, store, new).await,
        Task::ListAccounts => {
            print(json!({ "accounts": admin::list_accounts(&store).await? }));
            Ok(())
        }
        Task::ShowAccount(id) => {
            print(admin::show_account(&store, &id).await?);
            Ok(())
        }
        Task::CreateUser(new) => create_user(&config, store, new).await,
        Task::ListUsers(account) => {
            print(json!({ "users": admin::list_users(&store, &account).await? }));
            Ok(())
        }
        Task::Doctor { account, fix: true } => {
            let history = crate::history::open_store(&config)?;
            announcing(&config, |notifier| {
                doctor::fix(store, notifier, history, account)
            })
            .await
        }
        Task::Doctor {
            account,
            fix: false,
        } => doctor::report(store, account).await,
        Task::History(query) => {
            let history = crate::history::open_store(&config)?;
            let n = crate::history_cli::print(&history, &query).await?;
            eprintln!("history: {n} entries");
            Ok(())
        }
    }
}

/// A command with its arguments checked: what `run` does once the store is open.
enum Task {
    Serve,
    RefreshViews,
    Init,
    CreateAccount(NewAccount),
    ListAccounts,
    ShowAccount(AccountId),
    CreateUser(NewUser),
    ListUsers(AccountId),
    Doctor { account: AccountId, fix: bool },
    History(crate::history_cli::HistoryQuery),
}

impl Task {
    /// Checks the account ids given and reads the new user's password; nothing else is touched.
    fn parse(command: Command) -> Result<Self, String> {
        Ok(match command {
            Command::Serve => Task::Serve,
            Command::RefreshViews => Task::RefreshViews,
            Command::Init => Task::Init,
            Command::Accounts { command } => match command {
                AccountsCommand::Create(args) => Task::CreateAccount(NewAccount {
                    parent: args
                        .parent
                        .as_deref()
                        .map(|p| account_arg("--parent", p))
                        .transpose()?,
                    name: args.name,
                    realm: args.realm,
                    superduper_admin: args.superduper_admin,
                }),
                AccountsCommand::List => Task::ListAccounts,
                AccountsCommand::Show { id } => Task::ShowAccount(account_arg("ACCOUNT_ID", &id)?),
            },
            Command::Users { command } => match command {
                UsersCommand::Create(args) => {
                    let account = account_arg("--account", &args.account)?;
                    Task::CreateUser(NewUser {
                        account: Some(account),
                        password: args.password()?,
                        username: args.username,
                        first_name: args.first_name,
                        last_name: args.last_name,
                        email: args.email,
                        priv_level: args.priv_level,
                    })
                }
                UsersCommand::List { account } => {
                    Task::ListUsers(account_arg("--account", &account)?)
                }
            },
            Command::Doctor(args) => Task::Doctor {
                account: account_arg("--account", &args.account)?,
                fix: args.fix,
            },
            Command::History(args) => Task::History(args.parse()?),
        })
    }
}

/// `init`: what was created on stderr, the key id and that list on stdout.
async fn init(store: &Store) -> Result<(), String> {
    let report = admin::init(store).await?;
    for what in &report.created {
        eprintln!("init: created {what}");
    }
    if report.created.is_empty() {
        eprintln!("init: signing material already present, nothing changed");
    }
    print(json!({"kid": report.kid, "created": report.created}));
    Ok(())
}

/// `accounts create`, announced on the bus the configuration names.
async fn create_account(config: &Config, store: Store, new: NewAccount) -> Result<(), String> {
    let doc = announcing(config, |notifier| async move {
        admin::create_account(&store, &startup::design_docs()?, notifier.as_ref(), &new).await
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

/// `users create`, announced on the bus the configuration names.
async fn create_user(config: &Config, store: Store, new: NewUser) -> Result<(), String> {
    let doc = announcing(config, |notifier| async move {
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

/// `serve`: standalone, the signing material is created on first start; next to a shared Kazoo
/// (CouchDB), only `kz-groups init` may create it, and its absence is said plainly.
async fn serve(config: Config, store: Store) -> Result<(), String> {
    if let Backend::Embedded { dir } = &config.backend {
        let report = admin::init(&store).await?;
        for what in &report.created {
            log::info!("created {what} in {}", dir.display());
        }
    }
    let described = store.describe();
    let app = Application::build_with_store(config.clone(), store.clone())?;
    log::info!(
        "kz-groups {} listening on port {} (KZ_GROUPS_LISTEN={}), {}, answering as Crossbar {} \
         (KZ_GROUPS_CROSSBAR)",
        env!("CARGO_PKG_VERSION"),
        app.port(),
        config.listen,
        described,
        config.crossbar
    );
    if let Some(missing) = startup::missing_signing_material(&store).await {
        log::warn!("{missing}");
    }
    app.run_until_stopped().await.map_err(|e| e.to_string())
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

/// Brings the design documents of the `accounts` database and of every account database up to
/// date and builds the indexes of those it installs or changes, with progress on stderr.
/// Returns how many account databases were visited.
pub async fn refresh_views(store: &Store) -> Result<usize, String> {
    let designs = startup::design_docs()?;
    let dbs = store
        .all_dbs()
        .await
        .map_err(|e| format!("listing databases: {e}"))?;
    let accounts: Vec<DbName> = dbs
        .iter()
        .filter_map(|db| DbName::parse_account_db(db))
        .map(|account| account.db())
        .collect();
    eprintln!("refresh-views: {} account databases", accounts.len());
    let accounts_db = dbs.iter().any(|db| db == DbName::ACCOUNTS).then(|| {
        (
            DbName::system(DbName::ACCOUNTS),
            DesignDb::Accounts,
            String::new(),
        )
    });
    let targets = accounts_db
        .into_iter()
        .chain(accounts.iter().enumerate().map(|(n, db)| {
            let progress = format!("[{}/{}] ", n + 1, accounts.len());
            (db.clone(), DesignDb::Account, progress)
        }));
    let mut failed = 0;
    for (db, kind, progress) in targets {
        for design in designs.iter().filter(|d| d.database == kind) {
            let started = std::time::Instant::now();
            let outcome = match ensure_design(store, &db, design).await {
                // A changed one was built before the swap; a new one is built now, so the
                // first listing does not wait for it.
                Ok(Refresh::Created) => views::build(store, &db, &design.name, design)
                    .await
                    .map(|()| Refresh::Created),
                outcome => outcome,
            };
            let took = started.elapsed().as_secs_f64();
            match outcome {
                Ok(outcome) => eprintln!(
                    "{progress}{db} _design/{}: {} ({took:.1} s)",
                    design.name,
                    describe(outcome)
                ),
                Err(e) => {
                    failed += 1;
                    eprintln!("{progress}{db} _design/{}: FAILED: {e}", design.name);
                }
            }
        }
    }
    if failed > 0 {
        return Err(format!(
            "refresh-views: {failed} design documents could not be written or built"
        ));
    }
    eprintln!("refresh-views: done");
    Ok(accounts.len())
}

fn describe(outcome: Refresh) -> String {
    match outcome {
        Refresh::Unchanged => "unchanged".into(),
        Refresh::Created => "created, index built".into(),
        Refresh::Updated => "updated, index built before the swap".into(),
        Refresh::NotOurs { missing } if missing.is_empty() => {
            "not installed by kz-groups: left as it is".into()
        }
        Refresh::NotOurs { missing } => format!(
            "not installed by kz-groups: left as it is; lacks {}, read without a design document",
            missing.join(", ")
        ),
    }
}
