//! The HTTP server: the accept loop every shard runs on the shared port
//! (glommio's `TcpListener::bind` sets `SO_REUSEPORT`), the connection loop
//! over `cairn-proto`'s sans-IO decoder and writer, and the routes.
//!
//! Routes (`docs/HTTP-API.md` is the reference):
//! - `/{class}/{name}/{rest...}`: the object named `name` (percent-decoded);
//! - `/{class}/id/{hex}/{rest...}`: the object with that 64-hex-char ID;
//! - `/_cairn/health`, `/_cairn/metrics`.
//!
//! **Ordering:** a connection handles one request at a time (the decoder
//! pauses after each request until its response is written), so responses
//! leave in request order under pipelining even when the requests go to
//! different shards. The cost is that one connection's pipelined requests do
//! not run in parallel.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use cairn_proto::http::{DateCache, Limits, RequestDecoder, ResponseWriter, write_continue};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::host::Target;
use crate::id::{id_from_name, id_from_string};
use crate::object::{ErrorCode, Request, Response, percent_decode};
use crate::shard::Shard;

/// Accepts connections on the configured address until the server stops.
pub async fn serve(shard: Shard) {
    let listener = match TcpListener::bind(shard.config.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "cairn: shard {}: cannot listen on {}: {e}",
                shard.id, shard.config.listen
            );
            std::process::exit(2);
        }
    };
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if shard.stopping.load(Ordering::Acquire) {
                    break;
                }
                let _ = stream.set_nodelay(true);
                glommio::spawn_local(connection(stream, shard.clone())).detach();
            }
            Err(e) => eprintln!("cairn: shard {}: accept failed: {e}", shard.id),
        }
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counts a request in flight for as long as it lives, so shutdown can wait.
struct InFlight(Rc<Cell<usize>>);

impl InFlight {
    fn new(c: &Rc<Cell<usize>>) -> InFlight {
        c.set(c.get() + 1);
        InFlight(c.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

async fn connection(mut stream: TcpStream, shard: Shard) {
    let limits = Limits {
        header_bytes_max: shard.config.header_bytes_max,
        body_bytes_max: shard.config.body_bytes_max as u64,
        ..Limits::default()
    };
    let mut dec = RequestDecoder::new(limits);
    let mut buf = BytesMut::with_capacity(8192);
    let mut rbuf = vec![0u8; 16 << 10];
    let mut out = Vec::with_capacity(4096);
    let mut date = DateCache::new(unix_secs());
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(req)) => {
                if crate::ws::upgrade::is_upgrade(&req) {
                    // The socket leaves the HTTP loop for good (ws.rs).
                    crate::ws::upgrade::take_over(stream, buf, req, &shard).await;
                    return;
                }
                let _in_flight = InFlight::new(&shard.in_flight);
                let is_head = req.is_head();
                let resp = route(&shard, req).await;
                date.update(unix_secs());
                out.clear();
                let stopping = shard.stopping.load(Ordering::Acquire);
                if dec.response_sent(!stopping).is_err() {
                    return;
                }
                write_response(&mut out, &resp, &date, is_head, dec.must_close());
                if stream.write_all(&out).await.is_err() || dec.must_close() {
                    return;
                }
            }
            Ok(None) => {
                if dec.must_close()
                    && buf.is_empty()
                    && dec.state() == cairn_proto::http::ConnState::Closed
                {
                    return;
                }
                if dec.take_continue() {
                    out.clear();
                    write_continue(&mut out);
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                }
                let n = match stream.read(&mut rbuf).await {
                    Ok(n) => n,
                    Err(_) => return,
                };
                if n == 0 {
                    if let Err(e) = dec.peer_closed() {
                        let resp = Response::error(ErrorCode::BadRequest, &e.to_string());
                        out.clear();
                        write_response(&mut out, &resp, &date, false, true);
                        let _ = stream.write_all(&out).await;
                    }
                    return;
                }
                buf.extend_from_slice(&rbuf[..n]);
            }
            Err(e) => {
                let mut resp = Response::error(ErrorCode::BadRequest, &e.to_string());
                resp.status = e.status();
                out.clear();
                write_response(&mut out, &resp, &date, false, true);
                let _ = stream.write_all(&out).await;
                return;
            }
        }
    }
}

/// Appends `resp` in HTTP/1.1 form to `out`.
pub(crate) fn write_response(
    out: &mut Vec<u8>,
    resp: &Response,
    date: &DateCache,
    is_head: bool,
    close: bool,
) {
    let mut w = ResponseWriter::new(out, resp.status, date, is_head);
    for (k, v) in &resp.headers {
        // Handlers' header values are checked by the writer; an invalid one is dropped.
        let _ = w.header(k, v.as_bytes());
    }
    if resp.status == 503 {
        let _ = w.header("Retry-After", b"1");
    }
    if close {
        w.close();
    }
    w.body(&resp.body);
}

/// Maps a request to its object (or a built-in endpoint) and waits for the response.
pub async fn route(shard: &Shard, req: cairn_proto::http::Request) -> Response {
    match cairn_proto::http::target::split(req.target()).path {
        "/_cairn/health" => {
            return Response::json(200, format!(r#"{{"status":"ok","shard":{}}}"#, shard.id));
        }
        "/_cairn/metrics" => return metrics(shard),
        _ => {}
    }
    match resolve(shard, &req) {
        Ok((t, obj_req)) => shard.host.call(t, obj_req).await,
        Err(resp) => resp,
    }
}

/// The object a request addresses and the request as the object sees it, or
/// the error response for a bad address.
pub(crate) fn resolve(
    shard: &Shard,
    req: &cairn_proto::http::Request,
) -> Result<(Target, Request), Response> {
    let target = cairn_proto::http::target::split(req.target());
    let path = target.path;
    let query = target.query.unwrap_or("").to_string();
    let method = req.method().to_string();
    let mut segs = path.strip_prefix('/').unwrap_or(path).splitn(3, '/');
    let class = segs.next().unwrap_or("");
    let second = segs.next();
    let rest = segs.next();
    if class.is_empty() || shard.host.classes().get(class).is_none() {
        return Err(Response::error(
            ErrorCode::NotFound,
            "no such class; routes are /{class}/{name}/...",
        ));
    }
    let (t, rest) = match second {
        None | Some("") => {
            return Err(Response::error(
                ErrorCode::NotFound,
                "missing object name: /{class}/{name}/...",
            ));
        }
        Some("id") => {
            let mut parts = rest.unwrap_or("").splitn(2, '/');
            let hex = parts.next().unwrap_or("");
            let id = match id_from_string(hex) {
                Ok(id) => id,
                Err(e) => return Err(Response::error(ErrorCode::BadRequest, &e.to_string())),
            };
            (
                Target {
                    class: class.into(),
                    id,
                    name: None,
                },
                parts.next(),
            )
        }
        Some(name) => {
            let Some(name) = percent_decode(name) else {
                return Err(Response::error(
                    ErrorCode::BadRequest,
                    "the object name has a bad percent escape",
                ));
            };
            (
                Target {
                    class: class.into(),
                    id: id_from_name(class, &name),
                    name: Some(name),
                },
                rest,
            )
        }
    };
    let headers = req
        .headers()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    let obj_req = Request {
        method,
        path: rest.map(|r| format!("/{r}")).unwrap_or_default(),
        query,
        headers,
        body: req.body.clone(),
    };
    Ok((t, obj_req))
}

fn metrics(shard: &Shard) -> Response {
    let m = shard.host.metrics();
    let s = shard.host.store().stats();
    let rows: [(&str, &str, u64); 12] = [
        ("cairn_requests_total", "counter", m.requests),
        ("cairn_overloaded_total", "counter", m.overloaded),
        ("cairn_handler_panics_total", "counter", m.panics),
        ("cairn_activations_total", "counter", m.activations),
        ("cairn_evictions_total", "counter", m.evictions),
        ("cairn_alarms_fired_total", "counter", m.alarms_fired),
        ("cairn_alarms_failed_total", "counter", m.alarms_failed),
        (
            "cairn_alarms_abandoned_total",
            "counter",
            m.alarms_abandoned,
        ),
        (
            "cairn_storage_failures_total",
            "counter",
            m.storage_failures,
        ),
        (
            "cairn_active_objects",
            "gauge",
            shard.host.active_count() as u64,
        ),
        ("cairn_commits_total", "counter", s.commits),
        ("cairn_committed_mutations_total", "counter", s.mutations),
    ];
    let mut out = String::new();
    for (name, kind, v) in rows {
        out.push_str(&format!(
            "# TYPE {name} {kind}\n{name}{{shard=\"{}\"}} {v}\n",
            shard.id
        ));
    }
    out.push_str(&crate::ws::metrics_text(shard.id, &shard.host));
    let mut r = Response::new(200, out);
    r.headers
        .push(("content-type".into(), "text/plain; version=0.0.4".into()));
    r
}
