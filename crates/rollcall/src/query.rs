//! `rollcall get` and `rollcall set`: ask a service for a value or set one,
//! and print the answer, as a person would with mosquitto_pub and mosquitto_sub.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use rollcall_net::{BrokerList, Qos, Session};
use rollcall_proto::Topics;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::login::LoginArgs;

/// `rollcall get` arguments.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The host.
    host: String,
    /// The service (`system`, `gpio`, ...).
    app: String,
    /// The item (empty: everything; `interfaces`; `interface/outputs`).
    #[arg(default_value = "")]
    item: String,
    #[command(flatten)]
    common: Common,
}

/// `rollcall set` arguments.
#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// The host.
    host: String,
    /// The service.
    app: String,
    /// The item to set.
    item: String,
    /// The value, as it would be published (`1`, `on`, `{"a":1}`).
    value: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// The broker.
    /// A comma-separated list names the nodes of one clustered broker,
    /// tried in turn (docs/deploying.md).
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: BrokerList,
    #[command(flatten)]
    login: LoginArgs,
    /// Topic root.
    #[arg(long, default_value = "")]
    root: String,
    /// How long to wait for the answer.
    #[arg(long, default_value_t = 3000)]
    wait_ms: u64,
}

pub async fn get(args: GetArgs) -> Result<()> {
    let topics = Topics::new(&args.common.root)?;
    let rest = if args.item.is_empty() {
        "get".to_owned()
    } else {
        format!("get/{}", args.item)
    };
    let topic = topics.service(&args.host, &args.app, &rest);
    request(&args.common, &topics, &topic, None).await
}

pub async fn set(args: SetArgs) -> Result<()> {
    let topics = Topics::new(&args.common.root)?;
    let topic = topics.service(&args.host, &args.app, &format!("set/{}", args.item));
    request(&args.common, &topics, &topic, Some(args.value)).await
}

/// Publishes a request that names a private reply topic, and prints the answer.
async fn request(
    common: &Common,
    topics: &Topics,
    topic: &str,
    value: Option<String>,
) -> Result<()> {
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let id = rand_id();
    let client = format!("rollcall-cli-{id}");
    let mut session = Session::start(
        common.login.session(&common.broker, client.clone())?,
        shutdown.clone(),
        &tracker,
    )?;
    // Under the answer prefix, where a broker's ACL lets every agent write
    // (examples/mosquitto/acl), on a `$` level no roll-call may name as its
    // answer topic (so no forged roll-call makes agents answer here).
    let reply_topic = topics.topic(&format!("stat/${client}/reply"));
    session
        .handle
        .wait_connected(Duration::from_secs(5))
        .await
        .with_context(|| format!("connecting to {}", common.broker))?;
    // Confirmed before the request goes, so that the request carries our
    // acknowledgement of the SUBACK and a stock Mosquitto does not hold
    // the reply for it (see SessionHandle::subscribe_confirmed).
    session
        .handle
        .subscribe_confirmed(&reply_topic, Duration::from_secs(5))
        .await?;
    // A JSON object carries the id and reply topic beside its own fields;
    // any other value travels as {"value": ..} so that it can carry them too.
    let mut map = match value.as_deref().map(serde_json::from_str::<Value>) {
        None => serde_json::Map::new(),
        Some(Ok(Value::Object(map))) => map,
        Some(Ok(other)) => [("value".to_owned(), other)].into_iter().collect(),
        Some(Err(_)) => [("value".to_owned(), Value::from(value.unwrap_or_default()))]
            .into_iter()
            .collect(),
    };
    map.insert("id".into(), id.into());
    map.insert("topic".into(), reply_topic.clone().into());
    let payload = Value::Object(map).to_string();
    // QoS 0: the reply is the receipt (without one we say so), and a
    // PUBACK from a stock Mosquitto would hold the reply back for our
    // delayed TCP acknowledgement (about 40 ms).
    session
        .handle
        .publish(topic, payload, Qos::AtMostOnce, false)
        .await?;
    let answer = tokio::time::timeout(
        Duration::from_millis(common.wait_ms),
        session.incoming.recv(),
    )
    .await;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    match answer {
        Ok(Some(msg)) => {
            let text = String::from_utf8_lossy(&msg.payload);
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.into()));
            println!("{}", serde_json::to_string_pretty(&value)?);
            if value.get("ok") == Some(&Value::Bool(false)) {
                bail!("the service refused the request");
            }
            Ok(())
        }
        _ => bail!("no answer on {topic} within {} ms", common.wait_ms),
    }
}

/// An id unlikely to collide with another process's: a request's (here) or
/// a roll-call's (`scan`, `docs`, `demo`).
pub fn rand_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}
