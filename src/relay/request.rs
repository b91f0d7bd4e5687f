//! What a Kubernetes API request is about, read from its method, path and query the way the
//! API server's request-info resolver does, for the audit log.

use crate::domain::audit::KubeRequest;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub verb: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// Not a resource request: discovery, version, OpenAPI, health.
    pub discovery: bool,
    /// Its answer stays open: a watch, `logs -f`, or an interactive stream (exec, attach,
    /// port-forward).
    pub lasting: bool,
}

impl RequestInfo {
    pub fn parse(method: &str, path: &str, query: Option<&str>) -> Self {
        let mut info = Self::resolve(method, path, query);
        info.lasting = info.verb == "watch"
            || matches!(info.subresource.as_str(), "exec" | "attach" | "portforward")
            || (info.subresource == "log" && crate::tunnel::query_flag(query, "follow"));
        info
    }

    fn resolve(method: &str, path: &str, query: Option<&str>) -> Self {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, rest) = match parts.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => {
                return Self {
                    verb: method.to_ascii_lowercase(),
                    discovery: true,
                    ..Self::default()
                };
            }
        };
        // The deprecated `/watch/` prefix watches what follows it.
        let (prefixed_watch, rest) = match rest {
            ["watch", rest @ ..] => (true, rest),
            other => (false, other),
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (*ns, rest),
            other => ("", other),
        };
        let (resource, name, subresource) = match rest {
            [] => {
                return Self {
                    verb: method.to_ascii_lowercase(),
                    api_group: group.into(),
                    api_version: version.into(),
                    discovery: true,
                    ..Self::default()
                };
            }
            [r] => (*r, "", ""),
            [r, n] => (*r, *n, ""),
            [r, n, s, ..] => (*r, *n, *s),
        };
        // `GET /api/v1/namespaces/x` names the namespace `x` itself.
        let (resource, name) = if resource.is_empty() && !namespace.is_empty() {
            ("namespaces", namespace)
        } else {
            (resource, name)
        };
        let watch = prefixed_watch || crate::tunnel::query_flag(query, "watch");
        let verb = match (method, name.is_empty()) {
            ("GET" | "HEAD", _) if watch => "watch",
            ("GET" | "HEAD", true) => "list",
            ("GET" | "HEAD", false) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "deletecollection",
            ("DELETE", false) => "delete",
            (other, _) => {
                return Self::other(
                    other,
                    group,
                    version,
                    namespace,
                    resource,
                    name,
                    subresource,
                );
            }
        };
        Self {
            verb: verb.into(),
            api_group: group.into(),
            api_version: version.into(),
            namespace: namespace.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            name: name.into(),
            ..Self::default()
        }
    }

    fn other(
        method: &str,
        group: &str,
        version: &str,
        namespace: &str,
        resource: &str,
        name: &str,
        subresource: &str,
    ) -> Self {
        Self {
            verb: method.to_ascii_lowercase(),
            api_group: group.into(),
            api_version: version.into(),
            namespace: namespace.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            name: name.into(),
            ..Self::default()
        }
    }

    /// Requests that change something or open an interactive stream: recorded durably
    /// before they are forwarded.
    pub fn is_mutating(&self) -> bool {
        !matches!(
            self.verb.as_str(),
            "get" | "list" | "watch" | "head" | "options"
        ) || matches!(
            self.subresource.as_str(),
            "exec" | "attach" | "portforward" | "proxy"
        )
    }

    pub fn to_event(&self, method: &str, path: &str) -> KubeRequest {
        KubeRequest {
            method: method.to_owned(),
            verb: self.verb.clone(),
            api_group: self.api_group.clone(),
            api_version: self.api_version.clone(),
            resource: self.resource.clone(),
            subresource: self.subresource.clone(),
            name: self.name.clone(),
            path: path.chars().take(512).collect(),
            bytes: 0,
            duration_ms: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_the_api_server() {
        let r = RequestInfo::parse("GET", "/api/v1/namespaces/a/pods", Some("watch=true&rv=1"));
        assert_eq!(
            (r.verb.as_str(), r.namespace.as_str(), r.resource.as_str()),
            ("watch", "a", "pods")
        );
        assert!(r.lasting);
        let r = RequestInfo::parse("GET", "/api/v1/watch/namespaces/a/pods", None);
        assert_eq!(
            (
                r.verb.as_str(),
                r.namespace.as_str(),
                r.resource.as_str(),
                r.lasting
            ),
            ("watch", "a", "pods", true)
        );
        let r = RequestInfo::parse("GET", "/apis/apps/v1/watch/deployments", None);
        assert_eq!(
            (r.verb.as_str(), r.resource.as_str()),
            ("watch", "deployments")
        );
        let r = RequestInfo::parse("POST", "/api/v1/namespaces/a/pods/p/exec", None);
        assert_eq!(
            (r.verb.as_str(), r.name.as_str(), r.subresource.as_str()),
            ("create", "p", "exec")
        );
        assert!(r.is_mutating() && r.lasting);
        let r = RequestInfo::parse(
            "GET",
            "/api/v1/namespaces/a/pods/p/log",
            Some("follow=true"),
        );
        assert!(!r.is_mutating() && r.lasting);
        let r = RequestInfo::parse("GET", "/api/v1/namespaces/a/pods/p/log", None);
        assert!(!r.lasting);
        assert!(!RequestInfo::parse("GET", "/api/v1/namespaces/a/pods", None).lasting);
        let r = RequestInfo::parse("DELETE", "/apis/apps/v1/namespaces/a/deployments", None);
        assert_eq!(
            (r.verb.as_str(), r.api_group.as_str()),
            ("deletecollection", "apps")
        );
        let r = RequestInfo::parse("GET", "/api/v1/namespaces/kube-system", None);
        assert_eq!(
            (r.resource.as_str(), r.name.as_str()),
            ("namespaces", "kube-system")
        );
        assert!(RequestInfo::parse("GET", "/apis", None).discovery);
        assert!(RequestInfo::parse("GET", "/apis/apps/v1", None).discovery);
        assert!(RequestInfo::parse("GET", "/version", None).discovery);
        let r = RequestInfo::parse("GET", "/api/v1/nodes", None);
        assert_eq!(
            (r.verb.as_str(), r.namespace.as_str(), r.resource.as_str()),
            ("list", "", "nodes")
        );
    }
}
