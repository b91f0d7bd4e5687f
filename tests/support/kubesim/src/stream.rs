//! Long-lived responses: watches, pod logs, and the WebSocket stream protocols of exec,
//! attach and port-forward.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::fs::Files;
use crate::resources::ResourceType;
use crate::server::{Query, error_response_pub, selectors};
use crate::store::{Event, Selector, now_rfc3339, status};
use crate::{Inner, table};
use std::sync::Arc;

fn body_from(rx: mpsc::Receiver<Bytes>) -> Body {
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }))
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

struct Filter {
    resource: String,
    namespace: String,
    labels: Selector,
    fields: Selector,
}

impl Filter {
    fn matches(&self, ev: &Event) -> bool {
        ev.resource == self.resource
            && (self.namespace.is_empty() || ev.namespace == self.namespace)
            && self
                .labels
                .matches_labels(ev.object.pointer("/metadata/labels"))
            && self.fields.matches_fields(&ev.object)
    }
}

/// `?watch=true`: a chunked stream of JSON watch events.
pub fn watch(
    inner: &Inner,
    rt: &'static ResourceType,
    ns: &str,
    name: &str,
    query: &Query,
    as_table: bool,
) -> Response {
    let (labels, mut fields) = match selectors(query) {
        Ok(s) => s,
        Err(e) => return error_response_pub(e),
    };
    if !name.is_empty() {
        fields = match Selector::parse(&format!("metadata.name={name}")) {
            Ok(f) => f,
            Err(_) => fields,
        };
    }
    let filter = Filter {
        resource: format!("{}/{}", rt.group, rt.name),
        namespace: ns.to_owned(),
        labels,
        fields,
    };
    let since: Option<u64> = query
        .get("resourceVersion")
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0);
    let send_initial = query.flag("sendInitialEvents") || since.is_none();
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    // Snapshot and subscribe under one lock so no event falls between them.
    let (initial, mut events, rv, gone) = {
        let store = inner.store();
        let events = store.events.subscribe();
        let (initial, gone) = match since {
            Some(rv) if !send_initial => match store.since(rv) {
                Some(evs) => (
                    evs.into_iter().filter(|e| filter.matches(e)).collect(),
                    false,
                ),
                None => (Vec::new(), true),
            },
            _ => (
                store
                    .list(&filter.resource, Some(ns))
                    .into_iter()
                    .map(|(k, o)| Event {
                        kind: "ADDED",
                        resource: k.resource.clone(),
                        namespace: k.namespace.clone(),
                        rv: 0,
                        object: o.clone(),
                    })
                    .filter(|e| filter.matches(e))
                    .collect(),
                false,
            ),
        };
        (initial, events, store.rv, gone)
    };
    let wrap = move |obj: &Value| -> Value {
        if as_table {
            let rv = obj["metadata"]["resourceVersion"].clone();
            table::table(
                rt,
                std::slice::from_ref(obj),
                json!({"resourceVersion": rv}),
            )
        } else {
            obj.clone()
        }
    };
    let bookmark = move |rv: u64, initial_end: bool| -> Value {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta}})
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let initial_end = query.flag("sendInitialEvents") && bookmarks;
    tokio::spawn(async move {
        if gone {
            let st = status(410, "Expired", "too old resource version", None);
            let _ = tx.send(line(&json!({"type": "ERROR", "object": st}))).await;
            return;
        }
        for ev in &initial {
            if tx
                .send(line(&json!({"type": ev.kind, "object": wrap(&ev.object)})))
                .await
                .is_err()
            {
                return;
            }
        }
        if initial_end && tx.send(line(&bookmark(rv, true))).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        let mut last_rv = rv;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(line(&bookmark(last_rv, false))).await.is_err() {
                        return;
                    }
                }
                ev = events.recv() => match ev {
                    Ok(ev) => {
                        last_rv = ev.rv;
                        if ev.rv > rv && filter.matches(&ev) {
                            let v = json!({"type": ev.kind, "object": wrap(&ev.object)});
                            if tx.send(line(&v)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let st = status(410, "Expired", "the watch fell too far behind", None);
                        let _ = tx.send(line(&json!({"type": "ERROR", "object": st}))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        body_from(rx),
    )
        .into_response()
}

fn log_line(ns: &str, pod: &str, container: &str, n: u64, timestamps: bool) -> Bytes {
    let text = format!("kubesim {ns}/{pod}/{container}: log line {n}\n");
    if timestamps {
        Bytes::from(format!("{} {text}", now_rfc3339()))
    } else {
        Bytes::from(text)
    }
}

/// `pods/{name}/log`: ten lines, then with `follow=true` a new line every 100 ms until the
/// client goes away.
pub fn logs(ns: &str, pod: &str, query: &Query) -> Response {
    let container = query.get("container").unwrap_or("main").to_owned();
    let timestamps = query.flag("timestamps");
    let follow = query.flag("follow");
    let total: u64 = 10;
    let tail = query
        .get("tailLines")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(total)
        .min(total);
    let (ns, pod) = (ns.to_owned(), pod.to_owned());
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        for n in (total - tail + 1)..=total {
            if tx
                .send(log_line(&ns, &pod, &container, n, timestamps))
                .await
                .is_err()
            {
                return;
            }
        }
        if !follow {
            return;
        }
        let mut n = total;
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = ticker.tick() => {
                    n += 1;
                    if tx.send(log_line(&ns, &pod, &container, n, timestamps)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        body_from(rx),
    )
        .into_response()
}

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;

/// The outcome of a built-in command before any stdin is read.
pub(crate) struct Run {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub code: i32,
    /// `cat`: copy stdin to stdout until stdin closes.
    pub cat: bool,
    /// `tar x`: unpack stdin into this directory.
    pub untar: Option<String>,
}

/// `tar` as `kubectl cp` runs it: `tar cf - PATH` and `tar [opts] -xmf - [-C DIR]`.
fn tar(args: &[String], files: &Files, out: &mut Run) {
    let mut mode = None;
    let mut dir = "/".to_owned();
    let mut paths = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-C" {
            dir = it.next().cloned().unwrap_or_default();
        } else if a.starts_with("--") || a == "-" {
        } else if mode.is_none() && (a.starts_with('-') || paths.is_empty()) && a.contains('f') {
            mode = Some(if a.contains('x') { 'x' } else { 'c' });
        } else {
            paths.push(a.clone());
        }
    }
    match mode {
        Some('x') => out.untar = Some(crate::fs::normalize(&dir, "/")),
        Some(_) => {
            for p in paths {
                match crate::fs::tar(files, &crate::fs::normalize(&p, &dir)) {
                    Some(archive) => out.stdout.extend_from_slice(&archive),
                    None => {
                        out.stderr.push_str(&format!(
                            "tar: {p}: Cannot stat: No such file or directory\n"
                        ));
                        out.code = 2;
                    }
                }
            }
        }
        None => {
            out.stderr
                .push_str("tar: You must specify one of the '-Acdtrux' options\n");
            out.code = 2;
        }
    }
}

fn run_words(
    words: &[String],
    env: &[(String, String)],
    files: &Files,
    out: &mut Run,
) -> Option<i32> {
    let cmd = words.first()?;
    let args = &words[1..];
    match cmd.as_str() {
        "echo" => {
            out.stdout.extend_from_slice(args.join(" ").as_bytes());
            out.stdout.push(b'\n');
            out.code = 0;
        }
        "cat" if args.is_empty() => {
            out.cat = true;
            out.code = 0;
        }
        "cat" => {
            out.code = 0;
            for a in args {
                match files.get(&crate::fs::normalize(a, "/")) {
                    Some(data) => out.stdout.extend_from_slice(data),
                    None => {
                        out.stderr
                            .push_str(&format!("cat: {a}: No such file or directory\n"));
                        out.code = 1;
                    }
                }
            }
        }
        "ls" => {
            let dir = crate::fs::normalize(args.first().map_or("/", String::as_str), "/");
            let prefix = format!("{}/", dir.trim_end_matches('/'));
            let mut names: Vec<&str> = files
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .map(|rest| rest.split('/').next().unwrap_or(rest))
                .collect();
            names.dedup();
            for n in names {
                out.stdout.extend_from_slice(format!("{n}\n").as_bytes());
            }
            out.code = 0;
        }
        "test" | "[" => {
            let path = crate::fs::normalize(args.get(1).map_or("", String::as_str), "/");
            let ok = match args.first().map(String::as_str) {
                Some("-d") => crate::fs::is_dir(files, &path),
                Some("-f") => files.contains_key(&path),
                Some("-e") => files.contains_key(&path) || crate::fs::is_dir(files, &path),
                _ => false,
            };
            out.code = i32::from(!ok);
        }
        "tar" => tar(args, files, out),
        "env" | "printenv" => {
            for (k, v) in env {
                out.stdout
                    .extend_from_slice(format!("{k}={v}\n").as_bytes());
            }
            out.code = 0;
        }
        "true" => out.code = 0,
        "false" => out.code = 1,
        "exit" => {
            let code = args.first().and_then(|a| a.parse().ok()).unwrap_or(0);
            out.code = code;
            return Some(code);
        }
        "sh" | "/bin/sh" | "bash" | "/bin/bash"
            if args.first().map(String::as_str) == Some("-c") =>
        {
            let script = args.get(1).cloned().unwrap_or_default();
            for part in script.split(';') {
                let words = shell_words(part);
                if let Some(code) = run_words(&words, env, files, out) {
                    return Some(code);
                }
            }
        }
        other => {
            out.stderr.push_str(&format!(
                "OCI runtime exec failed: exec failed: unable to start container process: exec: {other:?}: executable file not found in $PATH: unknown\n"
            ));
            out.code = 127;
            return Some(127);
        }
    }
    None
}

fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() || any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.is_empty() || any {
        words.push(cur);
    }
    words
}

pub(crate) fn interpret(command: &[String], ns: &str, pod: &str, files: &Files) -> Run {
    let env = vec![
        (
            "PATH".to_owned(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        ),
        ("HOSTNAME".to_owned(), pod.to_owned()),
        ("POD_NAMESPACE".to_owned(), ns.to_owned()),
        ("KUBERNETES_SERVICE_HOST".to_owned(), "10.96.0.1".to_owned()),
        ("KUBERNETES_SERVICE_PORT".to_owned(), "443".to_owned()),
        ("HOME".to_owned(), "/root".to_owned()),
    ];
    let mut run = Run {
        stdout: Vec::new(),
        stderr: String::new(),
        code: 0,
        cat: false,
        untar: None,
    };
    run_words(command, &env, files, &mut run);
    run
}

pub(crate) fn exit_status(code: i32, command: &[String]) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {}, "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    }))
}

async fn send(ws: &mut WebSocket, channel: u8, data: &[u8]) -> bool {
    let mut frame = Vec::with_capacity(data.len() + 1);
    frame.push(channel);
    frame.extend_from_slice(data);
    ws.send(Message::Binary(Bytes::from(frame))).await.is_ok()
}

/// Copies stdin to stdout until stdin closes (v5 close signal, or the socket ends).
async fn cat(ws: &mut WebSocket, out_channel: u8) {
    while let Some(Ok(msg)) = ws.recv().await {
        match msg {
            Message::Binary(b) if !b.is_empty() => match b[0] {
                STDIN if b.len() > 1 && !send(ws, out_channel, &b[1..]).await => return,
                CLOSE if b.get(1) == Some(&STDIN) => return,
                _ => {}
            },
            Message::Close(_) => return,
            _ => {}
        }
    }
}

/// Reads stdin until it closes.
async fn read_stdin(ws: &mut WebSocket) -> Vec<u8> {
    let mut buf = Vec::new();
    while let Some(Ok(msg)) = ws.recv().await {
        match msg {
            Message::Binary(b) if !b.is_empty() => match b[0] {
                STDIN => buf.extend_from_slice(&b[1..]),
                CLOSE if b.get(1) == Some(&STDIN) => break,
                _ => {}
            },
            Message::Close(_) => break,
            _ => {}
        }
    }
    buf
}

/// Unpacks what `tar x` read into the pod's files; the exit code.
pub(crate) fn finish_untar(
    inner: &Inner,
    ns: &str,
    pod: &str,
    dir: &str,
    data: &[u8],
) -> (i32, String) {
    let mut all = inner.files.lock().unwrap_or_else(|p| p.into_inner());
    let files = all.entry(format!("{ns}/{pod}")).or_default();
    match crate::fs::untar(files, dir, data) {
        Ok(_) => (0, String::new()),
        Err(e) => (2, format!("{e}\n")),
    }
}

pub(crate) fn pod_files(inner: &Inner, ns: &str, pod: &str) -> Files {
    inner
        .files
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&format!("{ns}/{pod}"))
        .cloned()
        .unwrap_or_default()
}

async fn exec(
    mut ws: WebSocket,
    inner: Arc<Inner>,
    command: Vec<String>,
    ns: String,
    pod: String,
    tty: bool,
    stdin: bool,
) {
    let mut run = interpret(&command, &ns, &pod, &pod_files(&inner, &ns, &pod));
    let err_channel = if tty { STDOUT } else { STDERR };
    if !run.stdout.is_empty() && !send(&mut ws, STDOUT, &run.stdout).await {
        return;
    }
    if !run.stderr.is_empty() && !send(&mut ws, err_channel, run.stderr.as_bytes()).await {
        return;
    }
    if run.cat && stdin {
        cat(&mut ws, STDOUT).await;
    }
    if let Some(dir) = &run.untar {
        let data = if stdin {
            read_stdin(&mut ws).await
        } else {
            Vec::new()
        };
        let (code, err) = finish_untar(&inner, &ns, &pod, dir, &data);
        run.code = code;
        if !err.is_empty() && !send(&mut ws, err_channel, err.as_bytes()).await {
            return;
        }
    }
    let st = exit_status(run.code, &command);
    if send(&mut ws, ERROR, st.to_string().as_bytes()).await {
        let _ = ws.send(normal_close()).await;
    }
}

async fn attach(mut ws: WebSocket, ns: String, pod: String, stdin: bool) {
    let hello = format!("attached to {ns}/{pod}\n");
    if !send(&mut ws, STDOUT, hello.as_bytes()).await {
        return;
    }
    if stdin {
        cat(&mut ws, STDOUT).await;
    } else {
        let mut n = 0;
        loop {
            tokio::select! {
                msg = ws.recv() => match msg {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    _ => {}
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    n += 1;
                    if !send(&mut ws, STDOUT, format!("output line {n}\n").as_bytes()).await {
                        return;
                    }
                }
            }
        }
    }
    let st = exit_status(0, &[]);
    if send(&mut ws, ERROR, st.to_string().as_bytes()).await {
        let _ = ws.send(normal_close()).await;
    }
}

/// The WebSocket port-forward protocol (`v4.channel.k8s.io`): for the i-th port, channel
/// 2i carries data and 2i+1 errors; each channel starts with the port number (2 bytes,
/// little-endian). Every port is an echo service.
async fn portforward(mut ws: WebSocket, ports: Vec<u16>) {
    for (i, port) in ports.iter().enumerate() {
        let Ok(ch) = u8::try_from(i * 2) else { return };
        let bytes = port.to_le_bytes();
        if !send(&mut ws, ch, &bytes).await || !send(&mut ws, ch + 1, &bytes).await {
            return;
        }
    }
    while let Some(Ok(msg)) = ws.recv().await {
        match msg {
            Message::Binary(b)
                if b.len() > 1 && b[0] % 2 == 0 && !send(&mut ws, b[0], &b[1..]).await =>
            {
                return;
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}

/// kubectl 1.31+ tunnels SPDY port-forward streams through WebSocket binary messages.
const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

const PROTOCOLS: [&str; 4] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "channel.k8s.io",
];

pub fn upgrade(
    ws: WebSocketUpgrade,
    inner: Arc<Inner>,
    subresource: &str,
    ns: &str,
    pod: &str,
    query: &Query,
) -> Response {
    let (ns, pod) = (ns.to_owned(), pod.to_owned());
    let stdin = query.flag("stdin");
    let tty = query.flag("tty");
    let ws = if subresource == "portforward" {
        ws.protocols(std::iter::once(SPDY_TUNNEL).chain(PROTOCOLS))
    } else {
        ws.protocols(PROTOCOLS)
    };
    match subresource {
        "exec" => {
            let command = query.all("command");
            if command.is_empty() {
                return error_response_pub(crate::objects::ApiError::bad_request(
                    "you must specify at least 1 command",
                ));
            }
            ws.on_upgrade(move |socket| exec(socket, inner, command, ns, pod, tty, stdin))
        }
        "attach" => ws.on_upgrade(move |socket| attach(socket, ns, pod, stdin)),
        _ if ws
            .selected_protocol()
            .is_some_and(|p| p.as_bytes() == SPDY_TUNNEL.as_bytes()) =>
        {
            ws.on_upgrade(|socket| crate::spdy::portforward(crate::spdy::WsTransport(socket)))
        }
        _ => {
            let ports: Vec<u16> = query
                .all("ports")
                .iter()
                .flat_map(|p| p.split(','))
                .filter_map(|p| p.trim().parse().ok())
                .collect();
            if ports.is_empty() {
                return error_response_pub(crate::objects::ApiError::bad_request(
                    "query parameter \"port\" is required",
                ));
            }
            ws.on_upgrade(move |socket| portforward(socket, ports))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_scripts() {
        let cmd = |s: &[&str]| s.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        let r = interpret(
            &cmd(&["sh", "-c", "echo 'a  b'; exit 3; echo no"]),
            "d",
            "p",
            &Files::new(),
        );
        assert_eq!(r.stdout, b"a  b\n");
        assert_eq!(r.code, 3);
        assert!(interpret(&cmd(&["cat"]), "d", "p", &Files::new()).cat);
        assert_eq!(
            interpret(&cmd(&["nope"]), "d", "p", &Files::new()).code,
            127
        );
    }
}
