//! A host's liveness, as retained on `/{host}/$state` (docs/protocol.md
//! section 4): `online` or `offline`, then, from agents that know sessions,
//! the agent's session number: `online 1733587200123`, `offline 1733587200123`.
//!
//! The number exists for one race. An agent that restarts publishes `online`
//! on a new connection while the broker may not yet have noticed that the old
//! connection died; when it does, it publishes the old connection's last will
//! `offline`, retained, after the new `online`. With the number, the will says
//! which session it belongs to, and a reader that saw a newer session's
//! `online` ignores it (like Sparkplug's `bdSeq`).
//!
//! Text rather than JSON so that the state stays the first word: a reader
//! written for the plain payloads (`online`/`offline`) only has to look at the
//! first word, and a payload without a number, from an older agent, is read
//! by the same rule. Words after the number are reserved for later versions
//! and ignored.

use std::fmt;

use crate::ProtoError;

/// The largest `$state` payload accepted, in bytes: a state word, a number
/// and room for a few reserved words. Anything longer is not a state.
pub const MAX_STATE_PAYLOAD: usize = 128;

/// Whether a host is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// Its agent is connected.
    Online,
    /// Its agent stopped, or its connection died (the last will).
    Offline,
}

impl Liveness {
    /// The payload's first word.
    pub fn word(self) -> &'static str {
        match self {
            Liveness::Online => "online",
            Liveness::Offline => "offline",
        }
    }
}

/// One `$state` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostState {
    /// Online or offline.
    pub liveness: Liveness,
    /// The agent's session number; `None` from agents that predate it (and
    /// from anyone else publishing plain `online`/`offline`).
    pub session: Option<u64>,
}

impl HostState {
    /// `online N`.
    pub fn online(session: u64) -> Self {
        HostState {
            liveness: Liveness::Online,
            session: Some(session),
        }
    }

    /// `offline N`.
    pub fn offline(session: u64) -> Self {
        HostState {
            liveness: Liveness::Offline,
            session: Some(session),
        }
    }

    /// Reads a `$state` payload. An empty one (a cleared retained message,
    /// whitespace alone included) says nothing and is `Ok(None)`. Leading and
    /// trailing ASCII whitespace is ignored, so is anything after the number.
    pub fn parse(payload: &[u8]) -> Result<Option<Self>, ProtoError> {
        if payload.len() > MAX_STATE_PAYLOAD {
            return Err(ProtoError::TooLarge {
                len: payload.len(),
                max: MAX_STATE_PAYLOAD,
            });
        }
        let text = std::str::from_utf8(payload).map_err(|_| ProtoError::NotUtf8)?;
        let mut words = text.split_ascii_whitespace();
        let Some(word) = words.next() else {
            return Ok(None);
        };
        let liveness = match word {
            "online" => Liveness::Online,
            "offline" => Liveness::Offline,
            _ => {
                return Err(ProtoError::bad_value(
                    "$state",
                    "the first word is `online` or `offline`",
                ));
            }
        };
        let session = match words.next() {
            None => None,
            // `u64::from_str` alone would take a leading `+`.
            Some(n) if n.bytes().all(|b| b.is_ascii_digit()) => Some(n.parse().map_err(|_| {
                ProtoError::bad_value("$state", "the session number does not fit 64 bits")
            })?),
            Some(_) => {
                return Err(ProtoError::bad_value(
                    "$state",
                    "the second word is a session number (decimal digits)",
                ));
            }
        };
        Ok(Some(HostState { liveness, session }))
    }

    /// The payload to publish.
    pub fn to_payload(self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// Whether this state, from host `h`, is to be ignored by a reader whose
    /// latest `online` from `h` carried session `latest`: an `offline` of an
    /// older session is that session's last will arriving late. A plain
    /// `offline`, or any state when the latest `online` had no number, keeps
    /// its meaning.
    pub fn is_stale_after(self, latest: Option<u64>) -> bool {
        match (self.liveness, self.session, latest) {
            (Liveness::Offline, Some(n), Some(latest)) => n < latest,
            _ => false,
        }
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.liveness.word())?;
        if let Some(n) = self.session {
            write!(f, " {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<Option<HostState>, ProtoError> {
        HostState::parse(s.as_bytes())
    }

    #[test]
    fn plain_payloads_keep_their_meaning() {
        let plain = |liveness| HostState {
            liveness,
            session: None,
        };
        assert_eq!(parse("online"), Ok(Some(plain(Liveness::Online))));
        assert_eq!(parse("offline"), Ok(Some(plain(Liveness::Offline))));
        assert_eq!(parse(" online\n"), Ok(Some(plain(Liveness::Online))));
        assert_eq!(plain(Liveness::Offline).to_payload(), b"offline");
    }

    #[test]
    fn a_session_number_follows_the_word() {
        assert_eq!(parse("online 17"), Ok(Some(HostState::online(17))));
        assert_eq!(
            parse("offline\t18446744073709551615\r\n"),
            Ok(Some(HostState::offline(u64::MAX)))
        );
        assert_eq!(HostState::online(17).to_payload(), b"online 17");
        assert_eq!(HostState::offline(17).to_string(), "offline 17");
        // Reserved words after the number are ignored.
        assert_eq!(
            parse("online 17 reason=boot"),
            Ok(Some(HostState::online(17)))
        );
    }

    #[test]
    fn empty_says_nothing() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse(" \n"), Ok(None));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "maybe",
            "Online",
            "online17",
            "online -1",
            "online +1",
            "online 0x11",
            "online 18446744073709551616",
            "offline seventeen",
            "{\"state\":\"online\"}",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(HostState::parse(b"online \xff"), Err(ProtoError::NotUtf8));
        let long = format!("online 1 {}", "x".repeat(MAX_STATE_PAYLOAD));
        assert!(matches!(parse(&long), Err(ProtoError::TooLarge { .. })));
    }

    #[test]
    fn only_an_older_sessions_offline_is_stale() {
        let latest = Some(17);
        assert!(HostState::offline(16).is_stale_after(latest));
        assert!(!HostState::offline(17).is_stale_after(latest));
        assert!(!HostState::offline(18).is_stale_after(latest));
        assert!(!HostState::online(3).is_stale_after(latest));
        assert!(!HostState::offline(16).is_stale_after(None));
        let plain_offline = HostState {
            liveness: Liveness::Offline,
            session: None,
        };
        assert!(!plain_offline.is_stale_after(latest));
    }

    proptest! {
        /// Any bytes: no panic, and what parses prints as a payload that
        /// parses back the same.
        #[test]
        fn any_payload_parses_or_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
            if let Ok(Some(state)) = HostState::parse(&bytes) {
                prop_assert_eq!(HostState::parse(&state.to_payload()), Ok(Some(state)));
            }
        }

        /// Text close to a state (the bytes above rarely are): the same.
        #[test]
        fn near_states_parse_or_are_refused(text in "[ \t]?(online|offline|onlin|)[ \t]{0,2}[-+0-9a]{0,22}( [a-z0-9]{0,3})?") {
            if let Ok(Some(state)) = HostState::parse(text.as_bytes()) {
                prop_assert_eq!(HostState::parse(&state.to_payload()), Ok(Some(state)));
                prop_assert!(text.trim_start().starts_with(state.liveness.word()));
            }
        }

        /// Every state the agent can publish reads back as itself.
        #[test]
        fn published_states_read_back(online in any::<bool>(), session in proptest::option::of(any::<u64>()), pad in "[ \t\r\n]{0,3}") {
            let state = HostState {
                liveness: if online { Liveness::Online } else { Liveness::Offline },
                session,
            };
            let payload = format!("{pad}{state}{pad}");
            prop_assert_eq!(HostState::parse(payload.as_bytes()), Ok(Some(state)));
        }
    }
}
