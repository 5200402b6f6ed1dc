//! What every session test file needs: the sessions of one test, started
//! under one shutdown token and task tracker and stopped together.

use std::time::Duration;

use rollcall_net::{BrokerUrl, Session, SessionConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a session may take to connect, and the sessions to stop.
pub const HARNESS_WAIT: Duration = Duration::from_secs(10);

/// Sessions of one test, all stopped together.
pub struct Harness {
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

// Not every test file uses every helper.
#[allow(dead_code)]
impl Harness {
    pub fn new() -> Self {
        Self {
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// A session, not waited for.
    pub fn start(&self, config: SessionConfig) -> Session {
        Session::start(config, self.shutdown.clone(), &self.tracker).unwrap()
    }

    /// A session that must connect.
    pub async fn session(&self, config: SessionConfig) -> Session {
        let session = self.start(config);
        session.handle.wait_connected(HARNESS_WAIT).await.unwrap();
        session
    }

    /// A connected session to `broker` as `client_id`.
    pub async fn connect(&self, broker: &BrokerUrl, client_id: &str) -> Session {
        self.session(SessionConfig::new(broker.clone(), client_id))
            .await
    }

    /// Stops every session and waits for their tasks.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(HARNESS_WAIT, self.tracker.wait())
            .await
            .expect("the sessions stopped");
    }
}
