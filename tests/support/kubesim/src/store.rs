//! In-memory object storage with a global resourceVersion counter and a watch event feed.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::resources::ResourceType;

/// How many past events a watch may resume from before it gets 410 Gone.
const HISTORY: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// `group/resource`
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(rt: &ResourceType, namespace: &str, name: &str) -> Self {
        Key {
            resource: format!("{}/{}", rt.group, rt.name),
            namespace: if rt.namespaced {
                namespace.to_owned()
            } else {
                String::new()
            },
            name: name.to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub resource: String,
    pub namespace: String,
    pub rv: u64,
    pub object: Value,
}

pub struct Store {
    pub objects: BTreeMap<Key, Value>,
    pub rv: u64,
    history: VecDeque<Event>,
    pub events: broadcast::Sender<Event>,
}

impl Store {
    pub fn new() -> Self {
        Store {
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            events: broadcast::channel(4096).0,
        }
    }

    /// A copy of the objects with no history and no watchers, for dry runs.
    pub fn scratch(&self) -> Self {
        Store {
            objects: self.objects.clone(),
            rv: self.rv,
            history: VecDeque::new(),
            events: broadcast::channel(1).0,
        }
    }

    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub fn publish(&mut self, kind: &'static str, key: &Key, object: Value) {
        let ev = Event {
            kind,
            resource: key.resource.clone(),
            namespace: key.namespace.clone(),
            rv: self.rv,
            object,
        };
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(ev.clone());
        let _ = self.events.send(ev);
    }

    /// Events after `rv`, or None when `rv` is older than the kept history.
    pub fn since(&self, rv: u64) -> Option<Vec<Event>> {
        if let Some(first) = self.history.front()
            && first.rv > rv + 1
            && self.history.len() == HISTORY
        {
            return None;
        }
        Some(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<(&Key, &Value)> {
        self.objects
            .iter()
            .filter(|(k, _)| {
                k.resource == resource
                    && namespace.is_none_or(|ns| ns.is_empty() || k.namespace == ns)
            })
            .collect()
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Follows a dotted path (`metadata.name`, `status.phase`) into an object.
pub fn field<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(obj, |v, part| v.get(part))
}

pub fn field_str(obj: &Value, path: &str) -> String {
    match field(obj, path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

#[derive(Debug, Clone)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, Default)]
pub struct Selector(Vec<Req>);

fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

fn set_values(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set, found {s:?}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

impl Selector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                continue;
            }
            if let Some((k, v)) = p.split_once("!=") {
                reqs.push(Req::NotEq(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = p.split_once("==") {
                reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = p.split_once('=') {
                reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = p.split_once(" notin ") {
                reqs.push(Req::NotIn(k.trim().into(), set_values(v)?));
            } else if let Some((k, v)) = p.split_once(" in ") {
                reqs.push(Req::In(k.trim().into(), set_values(v)?));
            } else if let Some(k) = p.strip_prefix('!') {
                reqs.push(Req::NotExists(k.trim().into()));
            } else if p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                reqs.push(Req::Exists(p.into()));
            } else {
                return Err(format!("unable to parse requirement: {p:?}"));
            }
        }
        Ok(Selector(reqs))
    }

    /// Matches label selectors against a string map.
    pub fn matches_labels(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }

    /// Matches field selectors (`metadata.name=x`, `status.phase!=Running`) on any path.
    pub fn matches_fields(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => field_str(obj, k) == *v,
            Req::NotEq(k, v) => field_str(obj, k) != *v,
            Req::In(k, vs) => vs.contains(&field_str(obj, k)),
            Req::NotIn(k, vs) => !vs.contains(&field_str(obj, k)),
            Req::Exists(_) | Req::NotExists(_) => true,
        })
    }
}

pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut v = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 300 { "Success" } else { "Failure" },
        "message": message, "reason": reason, "code": code,
    });
    if let Some(d) = details {
        v["details"] = d;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        let labels = json!({"app": "web", "tier": "front"});
        let ok = |s: &str| Selector::parse(s).unwrap().matches_labels(Some(&labels));
        assert!(ok("app=web"));
        assert!(ok("app==web,tier"));
        assert!(!ok("app!=web"));
        assert!(ok("app in (web, db),!missing"));
        assert!(!ok("tier notin (front)"));
        assert!(!ok("missing"));
    }

    #[test]
    fn field_selectors() {
        let pod =
            json!({"metadata": {"name": "a", "namespace": "n"}, "status": {"phase": "Running"}});
        let ok = |s: &str| Selector::parse(s).unwrap().matches_fields(&pod);
        assert!(ok("metadata.name=a,metadata.namespace=n"));
        assert!(ok("status.phase!=Pending"));
        assert!(!ok("status.phase=Pending"));
    }
}
