//! The topic grammar: building every topic rollcall uses from a root, a host
//! and a service, parsing query topics back, and MQTT wildcard matching.
//!
//! Every topic is `{root}/{rest}`; the default root is empty, which gives the
//! leading slash of the original notes (`/udp/report`).

use crate::{Category, ProtoError};

/// The longest topic rollcall accepts from the network, in bytes.
pub const MAX_TOPIC: usize = 512;
/// The longest host or service name, in bytes.
pub const MAX_NAME: usize = 64;

/// Words that cannot name a service, because the verb-first query forms
/// (`/{host}/get/{app}/...`) and the host-level topics would become ambiguous.
const RESERVED_APP_NAMES: [&str; 6] = ["get", "set", "getapps", "reply", "sim", "error"];

/// Builds and parses the topics of one deployment root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topics {
    root: String,
}

/// A request recognised on a query topic of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `/{host}/getapps`
    GetApps,
    /// `/{host}/{app}/get/interfaces`
    Interfaces {
        /// The service asked.
        app: String,
    },
    /// `/{host}/{app}/get/interface/{category}`
    Interface {
        /// The service asked.
        app: String,
        /// Which list.
        category: Category,
    },
    /// `/{host}/{app}/get/{item}`: the current value(s) of `item` (may be empty: everything).
    Get {
        /// The service asked.
        app: String,
        /// What is asked for, possibly with slashes (`input/button`).
        item: String,
    },
    /// `/{host}/{app}/set/{item}`
    Set {
        /// The service addressed.
        app: String,
        /// What is set, possibly with slashes.
        item: String,
    },
    /// `/{host}/{app}/control` (or `/setup`): replace the configuration.
    Control {
        /// The service addressed.
        app: String,
    },
}

impl Query {
    /// The service a query addresses, if it addresses one.
    pub fn app(&self) -> Option<&str> {
        match self {
            Query::GetApps => None,
            Query::Interfaces { app }
            | Query::Interface { app, .. }
            | Query::Get { app, .. }
            | Query::Set { app, .. }
            | Query::Control { app } => Some(app),
        }
    }
}

impl Topics {
    /// Topics under `root` (`""` for the notes' leading-slash topics).
    ///
    /// A root is a topic prefix without wildcards and without a trailing slash.
    pub fn new(root: &str) -> Result<Self, ProtoError> {
        let root = root.trim_end_matches('/');
        if !root.is_empty() {
            check_topic(root, "root")?;
        }
        if root.starts_with('$') {
            // Wildcard subscriptions never match `$` topics (MQTT 3.1.1 §4.7.2).
            return Err(ProtoError::bad_value("root", "cannot start with `$`"));
        }
        Ok(Topics {
            root: root.to_owned(),
        })
    }

    /// The root these topics live under.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `{root}/{rest}`.
    pub fn topic(&self, rest: &str) -> String {
        format!("{}/{}", self.root, rest)
    }

    /// Where agents hand roll-calls to their host's services.
    pub fn udp_report(&self) -> String {
        self.topic("udp/report")
    }

    /// Where a roll-call may be published instead of broadcast.
    pub fn udp_request(&self) -> String {
        self.topic("udp/request")
    }

    /// A host's retained liveness: `online` or `offline`.
    pub fn state(&self, host: &str) -> String {
        self.topic(&format!("{host}/$state"))
    }

    /// A service's retained self-description.
    pub fn description(&self, host: &str, app: &str) -> String {
        self.topic(&format!("{host}/{app}/$description"))
    }

    /// `{root}/{host}/{app}/{rest}`: a topic of one service.
    pub fn service(&self, host: &str, app: &str, rest: &str) -> String {
        self.topic(&format!("{host}/{app}/{rest}"))
    }

    /// Where answers to a service's queries go when the request named no topic.
    pub fn app_reply(&self, host: &str, app: &str) -> String {
        self.service(host, app, "reply")
    }

    /// Where errors of a service go when the request named no topic.
    pub fn app_error(&self, host: &str, app: &str) -> String {
        self.service(host, app, "error")
    }

    /// Where `getapps` answers go when the request named no topic.
    pub fn host_reply(&self, host: &str) -> String {
        self.topic(&format!("{host}/reply"))
    }

    /// The host-level query topic, answered by the agent.
    pub fn getapps(&self, host: &str) -> String {
        self.topic(&format!("{host}/getapps"))
    }

    /// The subscriptions that cover every query topic of service `app` on
    /// `host`, in both the app-first and the notes' verb-first forms.
    pub fn query_filters(&self, host: &str, app: &str) -> Vec<String> {
        [
            format!("{host}/{app}/get/#"),
            format!("{host}/{app}/set/#"),
            format!("{host}/{app}/control"),
            format!("{host}/{app}/setup"),
            format!("{host}/get/{app}/#"),
            format!("{host}/set/{app}/#"),
        ]
        .iter()
        .map(|rest| self.topic(rest))
        .collect()
    }

    /// Recognises a query topic of `host`; `None` for any other topic.
    pub fn parse_query(&self, host: &str, topic: &str) -> Option<Query> {
        let rest = topic
            .strip_prefix(self.root.as_str())?
            .strip_prefix('/')?
            .strip_prefix(host)?
            .strip_prefix('/')?;
        let levels: Vec<&str> = rest.split('/').collect();
        let owned = |s: &str| s.to_owned();
        let query = match levels.as_slice() {
            ["getapps"] => Query::GetApps,
            // Verb first, as the notes write it: /{host}/get/{app}/{item...}
            [verb @ ("get" | "set"), app, tail @ ..] => Self::verb_query(verb, app, tail)?,
            [app, "control" | "setup"] => Query::Control { app: owned(app) },
            [app, verb @ ("get" | "set"), tail @ ..] => Self::verb_query(verb, app, tail)?,
            _ => return None,
        };
        query
            .app()
            .is_none_or(|app| check_name(app).is_ok())
            .then_some(query)
    }

    fn verb_query(verb: &str, app: &str, tail: &[&str]) -> Option<Query> {
        let app = app.to_owned();
        Some(match (verb, tail) {
            ("get", ["interfaces"]) => Query::Interfaces { app },
            // An unknown category falls through to `get`, whose unknown item gets an error answer.
            ("get", ["interface", category]) if category.parse::<Category>().is_ok() => {
                Query::Interface {
                    app,
                    category: category.parse().ok()?,
                }
            }
            ("get", tail) => Query::Get {
                app,
                item: tail.join("/"),
            },
            // An empty item is still a query: it gets an error answer.
            ("set", tail) => Query::Set {
                app,
                item: tail.join("/"),
            },
            _ => return None,
        })
    }
}

/// Checks a host or service name: non-empty, at most [`MAX_NAME`] bytes, no
/// `/`, `+`, `#`, NUL or whitespace, not starting with `$`, not a reserved word.
pub fn check_name(name: &str) -> Result<(), ProtoError> {
    let bad = |reason: &'static str| ProtoError::BadTopic {
        topic: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(bad("a name has 1 to 64 bytes"));
    }
    if name.starts_with('$') {
        return Err(bad("a name cannot start with `$`"));
    }
    if name
        .chars()
        .any(|c| matches!(c, '/' | '+' | '#' | '\0') || c.is_whitespace() || c.is_control())
    {
        return Err(bad(
            "a name cannot contain `/`, `+`, `#`, spaces or control characters",
        ));
    }
    if RESERVED_APP_NAMES.contains(&name) {
        return Err(bad("this word is reserved by the topic grammar"));
    }
    Ok(())
}

/// Checks a topic that something will be published to: non-empty, at most
/// [`MAX_TOPIC`] bytes, no wildcards, no NUL.
pub fn check_topic(topic: &str, field: &'static str) -> Result<(), ProtoError> {
    let bad = |reason: &'static str| ProtoError::BadValue {
        field: field.to_owned(),
        reason: format!("`{topic}`: {reason}"),
    };
    if topic.is_empty() {
        return Err(bad("a topic cannot be empty"));
    }
    if topic.len() > MAX_TOPIC {
        return Err(bad("a topic has at most 512 bytes"));
    }
    if topic.contains(['+', '#']) {
        return Err(bad(
            "a topic to publish to cannot contain the wildcards `+` or `#`",
        ));
    }
    if topic.contains('\0') {
        return Err(bad("a topic cannot contain NUL"));
    }
    Ok(())
}

/// Whether `topic` matches the MQTT subscription `filter` (`+` one level, `#` the rest).
///
/// Topics starting with `$` are not matched by a leading wildcard, as MQTT 3.1.1 §4.7.2 says.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The narrowest single filter that covers every topic in `topics`: the topic
/// itself when there is one, `+` where same-length topics differ in a level,
/// else the common leading levels followed by `#`. `None` when empty, or
/// when only a leading wildcard would do and a topic starts with `$`, which
/// no leading wildcard matches.
pub fn covering_filter<'a>(topics: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let topics: Vec<&str> = topics.into_iter().collect();
    let filter = narrowest_filter(&topics)?;
    topics.iter().all(|t| matches(&filter, t)).then_some(filter)
}

fn narrowest_filter(topics: &[&str]) -> Option<String> {
    let mut topics = topics.iter();
    let first: Vec<&str> = topics.next()?.split('/').collect();
    let mut levels: Vec<Option<&str>> = first.iter().copied().map(Some).collect();
    let mut same_len = true;
    for topic in topics {
        let other: Vec<&str> = topic.split('/').collect();
        same_len &= other.len() == levels.len();
        for (i, level) in levels.iter_mut().enumerate() {
            if other.get(i) != level.as_ref() {
                *level = None;
            }
        }
    }
    let out: Vec<&str> = if same_len {
        levels.iter().map(|l| l.unwrap_or("+")).collect()
    } else {
        let common = levels.iter().take_while(|l| l.is_some()).count();
        let mut out: Vec<&str> = first[..common].to_vec();
        out.push("#");
        out
    };
    Some(out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_root_gives_the_notes_leading_slash() {
        let t = Topics::default();
        assert_eq!(t.udp_report(), "/udp/report");
        assert_eq!(t.state("pizero1"), "/pizero1/$state");
        assert_eq!(
            t.description("pizero1", "gpio"),
            "/pizero1/gpio/$description"
        );
        let site = Topics::new("site1/").unwrap();
        assert_eq!(site.udp_report(), "site1/udp/report");
        assert!(Topics::new("a/#").is_err());
    }

    #[test]
    fn both_orders_of_the_notes_parse_to_the_same_query() {
        let t = Topics::default();
        let get = Query::Get {
            app: "gpio".into(),
            item: "input".into(),
        };
        assert_eq!(
            t.parse_query("pizero2", "/pizero2/get/gpio/input"),
            Some(get.clone())
        );
        assert_eq!(
            t.parse_query("pizero2", "/pizero2/gpio/get/input"),
            Some(get)
        );
        assert_eq!(
            t.parse_query("pizero2", "/pizero2/set/gpio/outputs"),
            Some(Query::Set {
                app: "gpio".into(),
                item: "outputs".into()
            })
        );
        assert_eq!(
            t.parse_query("h", "/h/system/get/interface/outputs"),
            Some(Query::Interface {
                app: "system".into(),
                category: Category::Outputs
            })
        );
        assert_eq!(
            t.parse_query("h", "/h/get/system/interfaces"),
            Some(Query::Interfaces {
                app: "system".into()
            })
        );
        assert_eq!(t.parse_query("h", "/h/getapps"), Some(Query::GetApps));
        assert_eq!(
            t.parse_query("h", "/h/gpio/setup"),
            Some(Query::Control { app: "gpio".into() })
        );
    }

    #[test]
    fn foreign_and_malformed_topics_are_not_queries() {
        let t = Topics::default();
        for topic in [
            "/other/getapps",
            "/h/gpio/reply",
            "/hx/getapps",
            "h/getapps",
            "/h/$x/get/a",
            "/h",
            "",
        ] {
            assert_eq!(t.parse_query("h", topic), None, "{topic}");
        }
    }

    #[test]
    fn every_query_filter_matches_its_query_topics() {
        let t = Topics::default();
        let filters = t.query_filters("h", "gpio");
        assert!(!filters.iter().any(|f| matches(f, "/h/system/get/x")));
        for topic in [
            "/h/gpio/get/interfaces",
            "/h/get/gpio/input/x",
            "/h/gpio/set/a",
            "/h/gpio/control",
            "/h/gpio/setup",
        ] {
            assert!(filters.iter().any(|f| matches(f, topic)), "{topic}");
        }
    }

    #[test]
    fn wildcards_match_as_mqtt_says() {
        assert!(matches("/a/+/c", "/a/b/c"));
        assert!(matches("/a/#", "/a/b/c"));
        assert!(matches("/a/#", "/a"));
        assert!(matches("#", "/a"));
        assert!(!matches("/a/+", "/a/b/c"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(!matches("/a/b", "/a/b/c"));
    }

    #[test]
    fn covering_filters_are_as_narrow_as_possible() {
        assert_eq!(covering_filter(["/h/d"]), Some("/h/d".into()));
        assert_eq!(
            covering_filter(["/h/gpio/set/a", "/h/gpio/set/b"]),
            Some("/h/gpio/set/+".into())
        );
        assert_eq!(
            covering_filter(["/h/gpio/set/a", "/h/gpio/set/outputs/x"]),
            Some("/h/gpio/set/#".into())
        );
        assert_eq!(covering_filter([]), None);
    }

    #[test]
    fn names_and_topics_are_checked() {
        assert!(check_name("pizero1").is_ok());
        for bad in ["", "a/b", "a+", "#", "$sys", "get", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_topic("/stat/data", "topic").is_ok());
        assert!(check_topic("/stat/+", "topic").is_err());
        assert!(check_topic("", "topic").is_err());
    }
}
