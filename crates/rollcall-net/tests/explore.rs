use rollcall_net::*;
use std::time::Duration;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

#[tokio::test]
async fn explore() {
    let broker = EmbeddedBroker::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let (sd, tr) = (CancellationToken::new(), TaskTracker::new());
    let a = Session::start(SessionConfig::new(broker.url(), "a"), sd.clone(), &tr).unwrap();
    a.handle
        .wait_connected(Duration::from_secs(5))
        .await
        .unwrap();
    for i in 0..250 {
        a.handle
            .publish_state(&format!("/h{i}/$description"), "x")
            .await
            .unwrap();
    }
    a.handle
        .publish("$SYS/foo", "dollar", Qos::AtLeastOnce, true)
        .await
        .unwrap();
    a.handle
        .publish("noslash/x", "ns", Qos::AtLeastOnce, true)
        .await
        .unwrap();
    let mut b = Session::start(SessionConfig::new(broker.url(), "b"), sd.clone(), &tr).unwrap();
    b.handle
        .wait_connected(Duration::from_secs(5))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.handle.subscribe("/+/$description").await.unwrap();
    b.handle.subscribe("#").await.unwrap();
    let r = b.handle.subscribe("$SYS/#").await;
    println!("sub $SYS: {r:?}");
    let mut n = 0;
    let mut ns = 0;
    let mut dollar = 0;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), b.incoming.recv()).await {
        if m.topic.ends_with("$description") {
            n += 1
        } else if m.topic.starts_with('$') {
            dollar += 1
        } else {
            ns += 1
        }
    }
    println!(
        "descriptions received: {n}, other: {ns}, dollar: {dollar}, connected: {}, stats {:?}",
        b.handle.is_connected(),
        b.handle.stats()
    );
    // client id with slash
    let c = Session::start(SessionConfig::new(broker.url(), "pi/1"), sd.clone(), &tr).unwrap();
    println!(
        "slash id: {:?}",
        c.handle.wait_connected(Duration::from_secs(2)).await
    );
}
