//! The core's queries (docs/protocol.md section 6): `getapps`, `get`, `set`
//! and `control` on the host's services, where each answer and each error
//! goes, and what a command changes besides its answer.

use rollcall_proto::json::Object;
use rollcall_proto::{Query, Request, error_reply, ok_reply};
use rollcall_services::ServiceError;
use serde_json::Value;

use super::{AgentCore, Now, Out};
use crate::AgentStats;

impl AgentCore {
    pub(super) fn on_query(&mut self, query: Query, payload: &[u8], now: Now, out: &mut Out) {
        let host = self.host().to_owned();
        let (default_reply, default_error) = match query.app() {
            Some(app) => (
                self.topics.app_reply(&host, app),
                self.topics.app_error(&host, app),
            ),
            None => (self.topics.host_reply(&host), self.topics.host_reply(&host)),
        };
        let request = match Request::parse(payload) {
            Ok(r) => r,
            Err(error) => {
                AgentStats::bump(self.stats.query_errors());
                out.plain(default_error, error_reply(None, &error.to_string()));
                return;
            }
        };
        let id = request.id;
        let explicit = request.topic.clone();
        let is_command = matches!(query, Query::Set { .. } | Query::Control { .. });
        let answered = self.answer_query(query, &request, now, out);
        // A description whose health the query changed goes out before the
        // answer, so whoever reads the answer finds it current.
        self.flush_health(now, out);
        match answered {
            Ok(fields) => {
                // Commands answer only when asked to; queries always answer.
                if let Some(topic) = explicit.or((!is_command).then_some(default_reply)) {
                    out.plain(topic, ok_reply(id, fields));
                }
            }
            Err(error) => {
                AgentStats::bump(self.stats.query_errors());
                let topic = explicit.unwrap_or(default_error);
                out.plain(topic, error_reply(id, &error.to_string()));
            }
        }
    }

    /// Carries out a query on the addressed service; the fields of the answer.
    fn answer_query(
        &mut self,
        query: Query,
        request: &Request,
        now: Now,
        out: &mut Out,
    ) -> Result<Object, ServiceError> {
        let mut fields = Object::new();
        let Some(app) = query.app().map(str::to_owned) else {
            fields.insert("host".into(), self.host().into());
            fields.insert("apps".into(), self.apps().into());
            return Ok(fields);
        };
        let index = self
            .slots
            .iter()
            .position(|s| s.service.name() == app)
            .ok_or_else(|| ServiceError::UnknownItem(app.clone()))?;
        fields.insert("function".into(), app.clone().into());
        match query {
            Query::GetApps => {}
            Query::Interfaces { .. } => {
                let desc = self.slots[index].service.describe(&self.ctx(now));
                if let Value::Object(lists) = desc.interfaces.topic_lists() {
                    fields.extend(lists);
                }
            }
            Query::Interface { category, .. } => {
                let desc = self.slots[index].service.describe(&self.ctx(now));
                let list =
                    serde_json::to_value(desc.interfaces.list(category)).unwrap_or(Value::Null);
                fields.insert(category.as_str().into(), list);
            }
            Query::Get { item, .. } => {
                let value = self.call(index, now, |svc, ctx| svc.get(&item, ctx))?;
                fields.insert("item".into(), item.into());
                fields.insert("value".into(), value);
            }
            Query::Set { item, .. } => {
                if item.is_empty() {
                    let topic = self.topics.service(self.host(), &app, "set/{item}");
                    return Err(ServiceError::NoItem { topic });
                }
                let body = &request.body;
                let outcome = self.call(index, now, |svc, ctx| svc.set(&item, body, ctx))?;
                fields.extend(outcome.reply.clone());
                self.after(index, outcome, now, out);
            }
            Query::Control { .. } => {
                let body = &request.body;
                let outcome = self.call(index, now, |svc, ctx| svc.control(body, ctx))?;
                // A new interval counts from now, not from the old schedule.
                let slot = &mut self.slots[index];
                slot.due = slot.service.tick_every().map(|every| now.at + every);
                fields.extend(outcome.reply.clone());
                self.after(index, outcome, now, out);
            }
        }
        Ok(fields)
    }
}
