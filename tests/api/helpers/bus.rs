//! Test support for the AMQP bus, against the real RabbitMQ in `KZ_TEST_AMQP_URL`: a listener
//! that declares the `configuration` exchange as Kazoo does and binds its own exclusive queue to
//! the routing keys of its own test's accounts (so tests run in parallel), and `rabbitmqctl`
//! for what only the broker's operator can do (close a connection, make a fresh vhost).
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use kz_groups::config::AmqpConfig;
use kz_groups::domain::ids::{random_hex, AccountId};
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value;

use super::TestApp;

/// How long a notice may take to arrive (amqp-notices §6 "within 2 s").
pub const ARRIVAL: Duration = Duration::from_secs(2);
/// How long the listener then stays quiet to prove nothing else came (§6 "no more within 1 s").
pub const QUIET: Duration = Duration::from_secs(1);

pub fn amqp_url() -> String {
    std::env::var("KZ_TEST_AMQP_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The same broker, another vhost.
pub fn amqp_url_in(vhost: &str) -> String {
    let url = amqp_url();
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
    format!("{base}/{vhost}")
}

/// The encoded account database, the routing keys' second word.
pub fn db_word(account: &str) -> String {
    AccountId::parse(account).unwrap().db().encoded()
}

/// The bus settings tests run with, for `url`.
pub fn amqp_config(url: &str) -> AmqpConfig {
    AmqpConfig {
        url: url.to_owned(),
        queue_capacity: 10_000,
        flush_timeout: Duration::from_secs(5),
    }
}

impl TestApp {
    /// The application publishing to the test broker.
    pub async fn spawn_with_bus() -> TestApp {
        Self::spawn_with_bus_at(&amqp_url()).await
    }

    /// The application publishing to the broker at `url`, under a node name of its own, so
    /// `rabbitmqctl` can tell its connection from every other test's.
    pub async fn spawn_with_bus_at(url: &str) -> TestApp {
        Self::spawn_with(|config| {
            config.node_name = format!("kz-groups-test-{}@test", random_hex(6));
            config.amqp = Some(amqp_config(url));
        })
        .await
    }
}

/// One message as a Kazoo consumer receives it.
#[derive(Debug, Clone)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
    pub json: Value,
}

pub struct Listener {
    connection: Connection,
    /// Kept open as long as the listener consumes from it.
    _channel: Channel,
    consumer: lapin::Consumer,
}

/// Declares `configuration` exactly as Kazoo does (amqp-notices §2.1).
pub async fn declare_kazoo_exchange(channel: &Channel) -> lapin::Result<()> {
    channel
        .exchange_declare(
            "configuration",
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: false,
                auto_delete: false,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

impl Listener {
    /// An exclusive, server-named queue bound to `keys` on the default test broker.
    pub async fn bind(keys: &[String]) -> Listener {
        Self::bind_at(&amqp_url(), keys).await
    }

    pub async fn bind_at(url: &str, keys: &[String]) -> Listener {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("the test broker at {url} answers: {e}"));
        let channel = connection.create_channel().await.expect("channel");
        declare_kazoo_exchange(&channel)
            .await
            .expect("declare configuration as Kazoo does");
        let queue = channel
            .queue_declare(
                "",
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("exclusive queue");
        for key in keys {
            channel
                .queue_bind(
                    queue.name().as_str(),
                    "configuration",
                    key,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind");
        }
        let consumer = channel
            .basic_consume(
                queue.name().as_str(),
                "",
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        Listener {
            connection,
            _channel: channel,
            consumer,
        }
    }

    /// The next message within `wait`, if any.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Message> {
        let delivery = tokio::time::timeout(wait, self.consumer.next())
            .await
            .ok()??
            .expect("delivery");
        let json = serde_json::from_slice(&delivery.data).unwrap_or(Value::Null);
        Some(Message {
            exchange: delivery.exchange.to_string(),
            routing_key: delivery.routing_key.to_string(),
            properties: delivery.properties.clone(),
            body: delivery.data.clone(),
            json,
        })
    }

    /// Exactly `n` messages, each within `ARRIVAL` of the one before, then none for `QUIET`.
    pub async fn expect(&mut self, n: usize) -> Vec<Message> {
        let got = self.collect(n, ARRIVAL).await;
        assert_eq!(
            got.len(),
            n,
            "expected {n} notices, got {}: {:#?}",
            got.len(),
            got.iter().map(|m| &m.routing_key).collect::<Vec<_>>()
        );
        self.expect_quiet().await;
        got
    }

    /// Up to `n` messages, waiting at most `wait` for each.
    pub async fn collect(&mut self, n: usize, wait: Duration) -> Vec<Message> {
        let mut got = Vec::new();
        while got.len() < n {
            match self.next_within(wait).await {
                Some(m) => got.push(m),
                None => break,
            }
        }
        got
    }

    pub async fn expect_quiet(&mut self) {
        if let Some(extra) = self.next_within(QUIET).await {
            panic!(
                "unexpected notice {}: {}",
                extra.routing_key,
                String::from_utf8_lossy(&extra.body)
            );
        }
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "test done").await;
    }
}

/// `rabbitmqctl` with `args`; panics with its output when it fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("rabbitmqctl must be installed for the bus tests: {e}"));
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The broker-side ids of the connections whose `connection_name` is `name`.
pub fn connections_named(name: &str) -> Vec<String> {
    // The JSON formatter prints pids in a form close_connection refuses; the table form is
    // `<pid>\t<client properties as Erlang terms>`.
    let out = rabbitmqctl(&[
        "list_connections",
        "pid",
        "client_properties",
        "--no-table-headers",
        "-q",
    ]);
    let wanted = format!("{{\"connection_name\",\"{name}\"}}");
    out.lines()
        .filter(|line| line.contains(&wanted))
        .filter_map(|line| line.split('\t').next().map(str::to_owned))
        .collect()
}

/// Closes, from the broker's side, every connection named `name`; returns how many.
pub fn close_connections_named(name: &str) -> usize {
    let pids = connections_named(name);
    for pid in &pids {
        rabbitmqctl(&["close_connection", pid, "kz-groups test: broker closes it"]);
    }
    pids.len()
}

/// A vhost of its own, with guest allowed in, deleted when dropped: an empty broker.
pub struct Vhost(pub String);

impl Vhost {
    pub fn create() -> Vhost {
        let name = format!("kz-groups-test-{}", random_hex(6));
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Vhost(name)
    }

    pub fn url(&self) -> String {
        amqp_url_in(&self.0)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.0])
            .output();
    }
}

/// A TCP path to the test broker that a test can cut and restore: a real broker outage as the
/// service sees it (connections reset, new ones refused), without stopping the broker that
/// other tests share.
pub struct FaultyLink {
    port: u16,
    up: tokio::sync::watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultyLink {
    pub async fn start() -> FaultyLink {
        let uri: lapin::uri::AMQPUri = amqp_url().parse().expect("KZ_TEST_AMQP_URL");
        let target = format!("{}:{}", uri.authority.host, uri.authority.port);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, up_rx) = tokio::sync::watch::channel(true);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*up_rx.borrow() {
                    continue; // dropped: the connection is refused
                }
                let target = target.clone();
                let mut up = up_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut broker) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut broker) => {}
                        _ = up.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        FaultyLink { port, up, accept }
    }

    /// The service's AMQP URL through this link.
    pub fn url(&self) -> String {
        let uri: lapin::uri::AMQPUri = amqp_url().parse().expect("KZ_TEST_AMQP_URL");
        format!(
            "amqp://{}:{}@127.0.0.1:{}/{}",
            uri.authority.userinfo.username,
            uri.authority.userinfo.password,
            self.port,
            urlencode_vhost(&uri.vhost)
        )
    }

    /// The broker goes away: open connections are cut, new ones refused.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for FaultyLink {
    fn drop(&mut self) {
        self.accept.abort();
        self.up.send_replace(false);
    }
}

fn urlencode_vhost(vhost: &str) -> String {
    vhost.replace('%', "%25").replace('/', "%2f")
}
