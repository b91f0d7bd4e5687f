//! Just enough SPDY/3.1 for kubectl's streaming: port-forward (over a plain `Upgrade:
//! SPDY/3.1` connection or tunnelled in WebSocket binary messages, as kubectl 1.31+ does),
//! and exec/attach for kubectl that predates the WebSocket exec protocol.
//!
//! Header blocks from the client are skipped, not decompressed: streams are told apart by
//! the order in which client-go creates them (port-forward: error then data; exec: error,
//! stdin, stdout, stderr, resize). Reply header blocks are "compressed" as stored deflate
//! blocks in a zlib stream without a preset dictionary, which any zlib reader accepts.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 1;

/// A byte pipe that carries SPDY frames.
pub trait Transport: Send {
    fn recv(&mut self) -> impl Future<Output = Option<Bytes>> + Send;
    fn send(&mut self, data: Bytes) -> impl Future<Output = bool> + Send;
}

pub struct IoTransport<T>(pub T);

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for IoTransport<T> {
    async fn recv(&mut self) -> Option<Bytes> {
        let mut buf = vec![0u8; 16 * 1024];
        match self.0.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(Bytes::from(buf))
            }
        }
    }

    async fn send(&mut self, data: Bytes) -> bool {
        self.0.write_all(&data).await.is_ok() && self.0.flush().await.is_ok()
    }
}

pub struct WsTransport(pub axum::extract::ws::WebSocket);

impl Transport for WsTransport {
    async fn recv(&mut self) -> Option<Bytes> {
        use axum::extract::ws::Message;
        loop {
            match self.0.recv().await? {
                Ok(Message::Binary(b)) => return Some(b),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    async fn send(&mut self, data: Bytes) -> bool {
        self.0
            .send(axum::extract::ws::Message::Binary(data))
            .await
            .is_ok()
    }
}

enum Frame {
    Control {
        kind: u16,
        flags: u8,
        data: Vec<u8>,
    },
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
}

fn parse(buf: &mut Vec<u8>) -> Option<Frame> {
    if buf.len() < 8 {
        return None;
    }
    let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    if buf.len() < 8 + len {
        return None;
    }
    let head: Vec<u8> = buf.drain(..8).collect();
    let data: Vec<u8> = buf.drain(..len).collect();
    let flags = head[4];
    if head[0] & 0x80 != 0 {
        Some(Frame::Control {
            kind: u16::from_be_bytes([head[2], head[3]]),
            flags,
            data,
        })
    } else {
        Some(Frame::Data {
            stream: u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff,
            flags,
            data,
        })
    }
}

fn control(kind: u16, flags: u8, data: &[u8]) -> Bytes {
    let mut f = vec![0x80, 3];
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(data);
    Bytes::from(f)
}

pub fn data_frame(stream: u32, flags: u8, data: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(data.len() + 8);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(data);
    Bytes::from(f)
}

/// One SPDY session: frames in, frames out, and the reply header compression state.
pub struct Session<T: Transport> {
    t: T,
    buf: Vec<u8>,
    zlib_started: bool,
}

pub enum Event {
    Opened(u32),
    Data(u32, Vec<u8>),
    Closed(u32),
}

impl<T: Transport> Session<T> {
    pub fn new(t: T) -> Self {
        Session {
            t,
            buf: Vec::new(),
            zlib_started: false,
        }
    }

    fn empty_headers(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.zlib_started {
            out.extend_from_slice(&[0x78, 0x01]);
            self.zlib_started = true;
        }
        // A non-final stored block holding a header block with zero pairs, then the empty
        // stored block of a sync flush, which is what makes a streaming inflater (Go's
        // compress/flate) hand out the bytes before the frame ends.
        out.extend_from_slice(&[0x00, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0]);
        out.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        out
    }

    pub async fn send_data(&mut self, stream: u32, data: &[u8]) -> bool {
        self.t.send(data_frame(stream, 0, data)).await
    }

    pub async fn close_stream(&mut self, stream: u32) -> bool {
        self.t.send(data_frame(stream, FLAG_FIN, &[])).await
    }

    /// The next stream event; answers SYN_STREAM and PING on the way. None at the end.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            while let Some(frame) = parse(&mut self.buf) {
                match frame {
                    Frame::Control { kind, flags, data } => match kind {
                        SYN_STREAM if data.len() >= 4 => {
                            let id = u32::from_be_bytes([data[0], data[1], data[2], data[3]])
                                & 0x7fff_ffff;
                            let mut reply = id.to_be_bytes().to_vec();
                            reply.extend(self.empty_headers());
                            if !self.t.send(control(SYN_REPLY, 0, &reply)).await {
                                return None;
                            }
                            if flags & FLAG_FIN != 0 {
                                self.buf.splice(0..0, data_frame(id, FLAG_FIN, &[]));
                            }
                            return Some(Event::Opened(id));
                        }
                        PING if !self.t.send(control(PING, flags, &data)).await => return None,
                        GOAWAY => return None,
                        _ => {}
                    },
                    Frame::Data {
                        stream,
                        flags,
                        data,
                    } => {
                        if flags & FLAG_FIN != 0 {
                            if !data.is_empty() {
                                self.buf.splice(0..0, data_frame(stream, FLAG_FIN, &[]));
                                return Some(Event::Data(stream, data));
                            }
                            return Some(Event::Closed(stream));
                        }
                        if !data.is_empty() {
                            return Some(Event::Data(stream, data));
                        }
                    }
                }
            }
            let chunk = self.t.recv().await?;
            self.buf.extend_from_slice(&chunk);
        }
    }
}

/// Port-forward: each local connection opens an error stream and then a data stream; every
/// remote port is an echo service.
pub async fn portforward<T: Transport>(t: T) {
    let mut s = Session::new(t);
    let mut closed: HashMap<u32, bool> = HashMap::new();
    while let Some(ev) = s.next().await {
        match ev {
            Event::Opened(id) => {
                closed.insert(id, false);
            }
            Event::Data(id, data) => {
                if !s.send_data(id, &data).await {
                    return;
                }
            }
            Event::Closed(id) => {
                if closed.insert(id, true) == Some(false) && !s.close_stream(id).await {
                    return;
                }
            }
        }
    }
}

/// exec/attach over SPDY with the v4 stream protocol (kubectl before 1.30).
pub async fn exec<T: Transport>(
    t: T,
    inner: std::sync::Arc<crate::Inner>,
    command: Vec<String>,
    ns: String,
    pod: String,
    flags: [bool; 4],
) {
    let [stdin, stdout, stderr, tty] = flags;
    let mut s = Session::new(t);
    // Roles in client-go's creation order.
    let mut roles: Vec<&str> = vec!["error"];
    if stdin {
        roles.push("stdin");
    }
    if stdout {
        roles.push("stdout");
    }
    if stderr && !tty {
        roles.push("stderr");
    }
    if tty {
        roles.push("resize");
    }
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut early_stdin: Vec<Event> = Vec::new();
    while ids.len() < roles.len() {
        match s.next().await {
            Some(Event::Opened(id)) => {
                ids.insert(roles[ids.len()], id);
            }
            Some(other) => early_stdin.push(other),
            None => return,
        }
    }
    let id = |role: &str| ids.get(role).copied();
    let mut run = crate::stream::interpret(
        &command,
        &ns,
        &pod,
        &crate::stream::pod_files(&inner, &ns, &pod),
    );
    if let Some(out) = id("stdout")
        && !run.stdout.is_empty()
        && !s.send_data(out, &run.stdout).await
    {
        return;
    }
    if let Some(err) = id("stderr").or(id("stdout"))
        && !run.stderr.is_empty()
        && !s.send_data(err, run.stderr.as_bytes()).await
    {
        return;
    }
    if (run.cat || run.untar.is_some()) && stdin {
        let stdin_id = id("stdin");
        let mut collected = Vec::new();
        let mut pending = early_stdin.into_iter();
        loop {
            let ev = match pending.next() {
                Some(ev) => ev,
                None => match s.next().await {
                    Some(ev) => ev,
                    None => return,
                },
            };
            match ev {
                Event::Data(sid, data) if Some(sid) == stdin_id => {
                    if run.untar.is_some() {
                        collected.extend_from_slice(&data);
                    } else if let Some(out) = id("stdout")
                        && !s.send_data(out, &data).await
                    {
                        return;
                    }
                }
                Event::Closed(sid) if Some(sid) == stdin_id => break,
                _ => {}
            }
        }
        if let Some(dir) = &run.untar {
            let (code, err) = crate::stream::finish_untar(&inner, &ns, &pod, dir, &collected);
            run.code = code;
            if let Some(e) = id("stderr").or(id("stdout"))
                && !err.is_empty()
                && !s.send_data(e, err.as_bytes()).await
            {
                return;
            }
        }
    }
    let status = crate::stream::exit_status(run.code, &command);
    if let Some(err) = id("error") {
        let _ = s.send_data(err, status.to_string().as_bytes()).await;
    }
    for role in &roles {
        if let Some(sid) = id(role)
            && !s.close_stream(sid).await
        {
            return;
        }
    }
    // Let the client read everything and hang up first.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while s.next().await.is_some() {}
    })
    .await;
}
