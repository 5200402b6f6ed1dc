//! The agent's shell: the loop that owns the roll-call socket, the MQTT
//! sessions, the state folder and the clock. It feeds what happens to the
//! [`AgentCore`] and carries out the effects it returns, in order. Every
//! decision is the core's; this file only does I/O.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rollcall_net::{Message, RollCallSocket, Session, SessionConfig, SessionHandle};

use crate::delivery::relay_session;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::alarm::Alarm;
use crate::core::{AgentCore, Effect, Input, Now, Routes, SessionId};
use crate::{AgentError, Config, state};

/// Bigger than any roll-call, so an oversized datagram is seen as oversized.
const DATAGRAM_BUFFER: usize = 2048;
/// The longest the loop waits on a requester's broker: to resolve its name,
/// or for room to queue an answer.
const RELAY_TIMEOUT: Duration = Duration::from_secs(1);

/// The kernel's answers about this host's addresses.
pub(crate) struct KernelRoutes;

impl Routes for KernelRoutes {
    fn local_addr_towards(&self, ip: IpAddr) -> Option<IpAddr> {
        rollcall_net::local_addr_towards(ip)
            .map_err(|error| warn!(%ip, %error, "no route"))
            .ok()
    }

    /// The kernel routes to a local address from that same address.
    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback()
            || ip.is_unspecified()
            || rollcall_net::local_addr_towards(ip).is_ok_and(|from| from == ip)
    }
}

/// Everything the loop owns besides the core: the sessions and the timer.
pub(crate) struct Shell {
    pub(crate) core: AgentCore,
    pub(crate) config: Arc<Config>,
    pub(crate) local: SessionHandle,
    pub(crate) template: SessionConfig,
    /// Sessions to requesters' brokers, with the token that closes each.
    pub(crate) remotes: HashMap<SessionId, (Session, CancellationToken)>,
    /// When the core wants [`Input::Timer`].
    pub(crate) wake: Option<Instant>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    pub(crate) session_token: CancellationToken,
    pub(crate) resolved_tx: mpsc::Sender<(u64, Option<SocketAddr>)>,
}

impl Shell {
    /// The agent's configuration.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) async fn serve(
        &mut self,
        udp: RollCallSocket,
        mut incoming: mpsc::Receiver<Message>,
        mut resolved: mpsc::Receiver<(u64, Option<SocketAddr>)>,
        hw_events: Arc<Notify>,
        mut alarm: Alarm,
    ) {
        let mut buf = vec![0u8; DATAGRAM_BUFFER];
        loop {
            let wake = self.wake;
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => {
                    let _ = self.step(Input::Shutdown).await;
                    return;
                }
                received = udp.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.step(Input::Datagram { bytes: &buf[..len], from }).await,
                    Err(error) => {
                        warn!(%error, "roll-call socket");
                        Ok(())
                    }
                },
                Some(msg) = incoming.recv() => {
                    self.step(Input::Message { session: SessionId::Local, topic: &msg.topic, payload: &msg.payload }).await
                }
                Some((lookup, addr)) = resolved.recv() => self.step(Input::Resolved { lookup, addr }).await,
                _ = alarm.wait_until(wake.map(Instant::into_std)) => self.step(Input::Timer).await,
                _ = hw_events.notified() => self.step(Input::Hardware).await,
            };
            if let Err(error) = result {
                warn!(%error, "cannot reach the agent's broker");
            }
        }
    }

    /// Hands `input` to the core and carries out what it decides, and then
    /// what the outcome of that makes it decide (a failed save, a lost session).
    pub(crate) async fn step(&mut self, input: Input<'_>) -> Result<(), AgentError> {
        let now = Now {
            at: Instant::now().into_std(),
            unix_ms: unix_ms(),
        };
        let mut effects = self.core.handle(input, now);
        let mut result = Ok(());
        loop {
            // Each batch ends with the core's next wake-up, or has none.
            self.wake = None;
            let mut feedback = Vec::new();
            for effect in effects {
                if let Err(error) = self.carry_out(effect, &mut feedback).await {
                    result = result.and(Err(error));
                }
            }
            if feedback.is_empty() {
                return result;
            }
            effects = feedback
                .into_iter()
                .flat_map(|input| self.core.handle(input, now))
                .collect();
        }
    }

    async fn carry_out(
        &mut self,
        effect: Effect,
        feedback: &mut Vec<Input<'static>>,
    ) -> Result<(), AgentError> {
        match effect {
            Effect::Publish {
                session: SessionId::Local,
                topic,
                payload,
                qos,
                retain,
            } => {
                // While the broker is away the session's queue fills and a
                // publish waits for room; a shutdown ends the wait.
                tokio::select! {
                    result = self.local.publish(&topic, payload, qos, retain) => result?,
                    _ = self.shutdown.cancelled() => {}
                }
            }
            Effect::Publish {
                session,
                topic,
                payload,
                qos,
                retain,
            } => {
                let Some((remote, _)) = self.remotes.get(&session) else {
                    return Ok(());
                };
                // The requester's broker may be unreachable, its queue full:
                // the loop never waits on it for long.
                let publish = remote.handle.publish(&topic, payload, qos, retain);
                match tokio::time::timeout(RELAY_TIMEOUT, publish).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => warn!(%error, "cannot publish to the requester's broker"),
                    Err(_) => warn!("the requester's broker is not taking messages; one dropped"),
                }
            }
            Effect::PublishState { topic, payload } => {
                self.local.publish_state(&topic, payload).await?
            }
            Effect::Subscribe {
                session: SessionId::Local,
                filter,
            } => self.local.subscribe(&filter).await?,
            Effect::Unsubscribe {
                session: SessionId::Local,
                filter,
            } => self.local.unsubscribe(&filter).await?,
            // Sessions to other brokers only publish.
            Effect::Subscribe { .. } | Effect::Unsubscribe { .. } => {}
            Effect::Open { session, broker } => {
                let SessionId::Remote(n) = session else {
                    return Ok(());
                };
                let client_id = format!("rollcall-relay-{}-{n}", self.config.hostname);
                let config =
                    relay_session(&self.template, broker, client_id, &self.config.relay_logins);
                let stop = self.session_token.child_token();
                match Session::start(config, stop.clone(), &self.tracker) {
                    Ok(remote) => drop(self.remotes.insert(session, (remote, stop))),
                    Err(error) => {
                        warn!(%error, "cannot open a session to the requester's broker");
                        feedback.push(Input::SessionLost(session));
                    }
                }
            }
            Effect::Close { session } => {
                if let Some((_, stop)) = self.remotes.remove(&session) {
                    stop.cancel();
                }
            }
            Effect::Resolve { lookup, host, port } => {
                let (tx, shutdown) = (self.resolved_tx.clone(), self.shutdown.clone());
                self.tracker.spawn(async move {
                    let found = tokio::time::timeout(
                        RELAY_TIMEOUT,
                        tokio::net::lookup_host((host.as_str(), port)),
                    );
                    tokio::select! {
                        found = found => {
                            let addr = found.ok().and_then(Result::ok).and_then(|mut a| a.next());
                            let _ = tx.send((lookup, addr)).await;
                        }
                        _ = shutdown.cancelled() => {}
                    }
                });
            }
            Effect::Save { service, state } => {
                if let Err(error) = state::save(&self.config.state_dir, &service, &state) {
                    warn!(%error, %service, dir = %self.config.state_dir.display(), "cannot save state; trying again");
                    feedback.push(Input::SaveFailed { service });
                }
            }
            Effect::WakeAt(at) => self.wake = Some(Instant::from_std(at)),
        }
        Ok(())
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
