//! The load harness's lower bound for the gateway's plaintext path: the same hyper server
//! the gateway uses, with hyper-util's pooled client (what the gateway used until commit
//! 2fe3c0f), with the same threading (one current-thread runtime per core,
//! `SO_REUSEPORT`, a connection pool per worker), and nothing in between: no router, no middleware, no metrics, no logs. What the gateway costs above
//! this is what its own layers cost; what this costs above nginx is the hyper stack's.
//!
//! With `--pool local`, the upstream side is the one the gateway now has
//! (`src/proxy/pool.rs`) in its simplest form: per worker, a set of HTTP/1 connections
//! built on `hyper::client::conn::http1` (no pool shared across threads, no task spawned
//! per request to watch a connection go idle), a connection going back to its worker's set
//! when the answer's body ends.
//!
//! `cargo run --release --example bare_proxy -- 127.0.0.1:9001 http://127.0.0.1:9000 [--pool local]`

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_proxy LISTEN_IP:PORT http://UPSTREAM_IP:PORT [--pool legacy|local]");
        std::process::exit(64);
    };
    let local = match (args.next().as_deref(), args.next().as_deref()) {
        (None, _) | (Some("--pool"), Some("legacy")) => false,
        (Some("--pool"), Some("local")) => true,
        _ => {
            eprintln!("--pool is legacy (hyper-util's pooled client) or local");
            std::process::exit(64);
        }
    };
    let listen: SocketAddr = listen.parse().expect("a socket address");
    let upstream: Uri = upstream.parse().expect("an http:// URL");
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let socket = reuseport(listen)?;
            let upstream = upstream.clone();
            Ok(std::thread::spawn(move || {
                if local {
                    local_worker(socket, upstream)
                } else {
                    worker(socket, upstream)
                }
            }))
        })
        .collect::<std::io::Result<_>>()?;
    eprintln!("bare proxy on {listen} -> {upstream}");
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn worker(socket: std::net::TcpListener, upstream: Uri) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::from_std(socket)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
        let authority = upstream.authority().expect("a host").clone();
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            let (client, authority) = (client.clone(), authority.clone());
            tokio::spawn(async move {
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let pq = req.uri().path_and_query().cloned();
                    let mut parts = http::uri::Parts::default();
                    parts.scheme = Some(http::uri::Scheme::HTTP);
                    parts.authority = Some(authority.clone());
                    parts.path_and_query = pq;
                    *req.uri_mut() = Uri::from_parts(parts).expect("a valid URI");
                    req.headers_mut().remove(http::header::HOST);
                    client.request(req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    })
}

/// One worker's idle upstream connections, reachable from this thread only.
type Idle = Rc<RefCell<Vec<SendRequest<Incoming>>>>;

fn local_worker(socket: std::net::TcpListener, upstream: Uri) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::from_std(socket)?;
        let authority = upstream.authority().expect("a host").clone();
        let host = http::HeaderValue::from_str(authority.as_str()).expect("a host header");
        let idle: Idle = Rc::default();
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            let (idle, authority, host) = (idle.clone(), authority.clone(), host.clone());
            tokio::task::spawn_local(async move {
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let (idle, authority) = (idle.clone(), authority.clone());
                    // Origin form and the upstream's Host, as the pooled client would send.
                    let pq = req.uri().path_and_query().cloned();
                    *req.uri_mut() = pq.map_or_else(|| Uri::from_static("/"), Uri::from);
                    req.headers_mut().insert(http::header::HOST, host.clone());
                    async move {
                        let mut sender = checkout(&idle, &authority).await?;
                        let res = sender.send_request(req).await?;
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(res.map(|body| {
                            ReturnOnEnd {
                                body,
                                sender: Some(sender),
                                idle,
                            }
                        }))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    })
}

/// An idle connection ready for a request, or a new one.
async fn checkout(
    idle: &Idle,
    authority: &http::uri::Authority,
) -> Result<SendRequest<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    loop {
        let Some(mut sender) = idle.borrow_mut().pop() else {
            break;
        };
        // A connection goes back when its answer's last frame is read, a moment before
        // its task marks it ready for the next request: wait for that, unless it closed.
        if !sender.is_closed() && sender.ready().await.is_ok() {
            return Ok(sender);
        }
    }
    let tcp = TcpStream::connect(authority.as_str()).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::task::spawn_local(conn);
    Ok(sender)
}

/// The upstream's answer body; its connection goes back to the idle set at the end.
struct ReturnOnEnd {
    body: Incoming,
    sender: Option<SendRequest<Incoming>>,
    idle: Idle,
}

impl ReturnOnEnd {
    fn give_back(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.idle.borrow_mut().push(sender);
        }
    }
}

/// An answer dropped before its end: its connection is closed or drains; `checkout`
/// tells which.
impl Drop for ReturnOnEnd {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl http_body::Body for ReturnOnEnd {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        // hyper's server stops polling once `is_end_stream` says so (a known length read
        // in full): the end is either that or the last `None`.
        if matches!(frame, Poll::Ready(None)) || self.body.is_end_stream() {
            self.give_back();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn reuseport(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
