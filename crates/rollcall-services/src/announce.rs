//! Announced services: programs that cannot answer a roll-call themselves (a
//! cron job, a shell script that publishes a topic) are described in the
//! agent's configuration, and the agent answers for them.

use rollcall_proto::{Description, Health, Interface, Interfaces, ValueType};
use serde::Deserialize;
use serde_json::Value;

use crate::{Ctx, Service, ServiceError};

/// The configuration of one announced service, as written in the agent's TOML.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnounceConfig {
    /// The service's function name.
    pub function: String,
    /// One line for a person.
    #[serde(default)]
    pub doc: Option<String>,
    /// Topics it consumes.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Topics it publishes.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Its configuration topics.
    #[serde(default)]
    pub controls: Vec<String>,
}

/// A service the agent answers for, from its configuration alone.
#[derive(Debug, Clone)]
pub struct Announced {
    config: AnnounceConfig,
}

impl Announced {
    /// Answers for the service `config` describes.
    pub fn new(config: AnnounceConfig) -> Self {
        Announced { config }
    }
}

/// Interface entries for topics known only by name: typed as JSON, named after their last level.
fn entries(topics: &[String]) -> Vec<Interface> {
    topics
        .iter()
        .map(|t| {
            let name = t.rsplit('/').next().unwrap_or(t);
            Interface::new(name, t.clone(), ValueType::Json)
        })
        .collect()
}

impl Service for Announced {
    fn health(&self) -> Option<Health> {
        None
    }

    fn name(&self) -> &str {
        &self.config.function
    }

    fn describe(&self, _ctx: &Ctx<'_>) -> Description {
        Description {
            function: self.config.function.clone(),
            doc: self.config.doc.clone(),
            interfaces: Interfaces {
                inputs: entries(&self.config.inputs),
                outputs: entries(&self.config.outputs),
                functions: Vec::new(),
                controls: entries(&self.config.controls),
            },
            health: self.health(),
        }
    }

    fn get(&mut self, _item: &str, _ctx: &Ctx<'_>) -> Result<Value, ServiceError> {
        Err(ServiceError::Unsupported(
            "get (an announced service has no values the agent knows)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_proto::{Category, Topics};

    #[test]
    fn describes_the_configured_topics() {
        let svc = Announced::new(AnnounceConfig {
            function: "backup".into(),
            doc: None,
            inputs: vec![],
            outputs: vec!["/nas/backup/last".into(), "/nas/backup/size".into()],
            controls: vec![],
        });
        let topics = Topics::default();
        let ctx = Ctx {
            host: "nas",
            topics: &topics,
            now_ms: 0,
        };
        let d = svc.describe(&ctx);
        assert_eq!(d.interfaces.outputs[0].name, "last");
        assert_eq!(
            d.interfaces.flat(Category::Outputs).as_deref(),
            Some("/nas/backup/+")
        );
    }
}
