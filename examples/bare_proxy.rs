//! The load harness's lower bound for the gateway's plaintext path: the same hyper server
//! and hyper-util client the gateway uses, with the same threading (one current-thread
//! runtime per core, `SO_REUSEPORT`, a connection pool per worker), and nothing in
//! between: no router, no middleware, no metrics, no logs. What the gateway costs above
//! this is what its own layers cost; what this costs above nginx is the hyper stack's.
//!
//! `cargo run --release --example bare_proxy -- 127.0.0.1:9001 http://127.0.0.1:9000`

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_proxy LISTEN_IP:PORT http://UPSTREAM_IP:PORT");
        std::process::exit(64);
    };
    let listen: SocketAddr = listen.parse().expect("a socket address");
    let upstream: Uri = upstream.parse().expect("an http:// URL");
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let socket = reuseport(listen)?;
            let upstream = upstream.clone();
            Ok(std::thread::spawn(move || worker(socket, upstream)))
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
