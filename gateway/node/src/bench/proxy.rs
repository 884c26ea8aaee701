//! A TCP proxy that injects network faults between two nodes, for the fault tests and `bench
//! soak`. TLS stays end to end (the proxy only moves bytes), so the nodes see exactly what a bad
//! network does to them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Pass everything both ways.
    None = 0,
    /// Pass the request, swallow the answer: the receiver works, the sender times out.
    SwallowResponses = 1,
    /// Pass the request, then close the connection in the middle of the answer.
    CutResponses = 2,
    /// Close every new connection at once: the destination is down.
    Down = 3,
    /// Close the port itself: connections are refused, as on a machine whose service is not
    /// running. Open connections stay until [`FaultProxy::cut`].
    Refused = 4,
    /// Take new connections and never answer: a peer behind a broken route or a dead virtual
    /// IP. They are held until [`FaultProxy::cut`].
    Blackhole = 5,
}

/// Client bytes after which the request is surely past the TLS handshake (envelopes are larger).
const REQUEST_BYTES: u64 = 8 * 1024;

#[derive(Debug, Clone)]
pub struct FaultProxy {
    pub port: u16,
    upstream: Arc<AtomicU16>,
    /// Bumped by [`FaultProxy::redirect`]: open connections close, so pooled ones reconnect.
    generation: tokio::sync::watch::Sender<u64>,
    fault: Arc<AtomicU8>,
    /// Woken by [`FaultProxy::set`]: the listener closes or reopens its port.
    fault_set: Arc<tokio::sync::Notify>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicU64>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let proxy = FaultProxy {
            port: listener.local_addr()?.port(),
            upstream: Arc::new(AtomicU16::new(upstream)),
            generation: tokio::sync::watch::Sender::new(0),
            fault: Arc::new(AtomicU8::new(Fault::None as u8)),
            fault_set: Arc::new(tokio::sync::Notify::new()),
            connections: Arc::new(AtomicU64::new(0)),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            let mut listener = Some(listener);
            // While refusing, the port stays bound without listening: connections to it are
            // refused, and no other socket (an outgoing connection's source port) can take it.
            let mut held: Option<tokio::net::TcpSocket> = None;
            loop {
                let fault_set = p.fault_set.notified();
                let Some(open) = &listener else {
                    fault_set.await;
                    if !p.is(Fault::Refused) {
                        match held.take().map(|socket| socket.listen(1024)) {
                            Some(Ok(reopened)) => listener = Some(reopened),
                            _ => {
                                eprintln!("fault proxy: could not reopen port {}; it stays closed", p.port);
                                return;
                            }
                        }
                    }
                    continue;
                };
                let accepted = tokio::select! {
                    accepted = open.accept() => accepted,
                    () = fault_set => {
                        if p.is(Fault::Refused) {
                            listener = None;
                            held = hold_port(p.port).inspect_err(|e| {
                                eprintln!("fault proxy: could not hold port {} while refusing: {e}", p.port);
                            }).ok();
                        }
                        continue;
                    }
                };
                let Ok((client, _)) = accepted else { return };
                p.connections.fetch_add(1, Ordering::SeqCst);
                if p.is(Fault::Down) {
                    drop(client);
                    continue;
                }
                let upstream = p.upstream.load(Ordering::SeqCst);
                let mut redirected = p.generation.subscribe();
                redirected.borrow_and_update();
                let fault = Arc::clone(&p.fault);
                let silent = p.is(Fault::Blackhole);
                tokio::spawn(async move {
                    if silent {
                        let _held = client;
                        let _ = redirected.changed().await;
                        return;
                    }
                    tokio::select! {
                        () = relay(client, upstream, fault) => {}
                        _ = redirected.changed() => {}
                    }
                });
            }
        });
        Ok(proxy)
    }

    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
        self.fault_set.notify_one();
    }

    fn is(&self, fault: Fault) -> bool {
        self.fault.load(Ordering::SeqCst) == fault as u8
    }

    /// Sends new connections to another port (a restarted receiver).
    pub fn redirect(&self, upstream: u16) {
        self.upstream.store(upstream, Ordering::SeqCst);
        self.cut();
    }

    /// Closes every open connection at once, mid-request or idle, as a broken network does;
    /// new ones are served as before.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Binds `port` on loopback without listening.
fn hold_port(port: u16) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
    Ok(socket)
}

/// Moves bytes both ways; the fault is read per chunk, so pooled (keep-alive) connections
/// change behaviour when the test switches it.
async fn relay(client: TcpStream, upstream: u16, fault: Arc<AtomicU8>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let sent_up = Arc::clone(&sent);
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    sent_up.fetch_add(n as u64, Ordering::SeqCst);
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = server_write.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let answering = sent.load(Ordering::SeqCst) > REQUEST_BYTES;
        match fault.load(Ordering::SeqCst) {
            f if f == Fault::SwallowResponses as u8 && answering => continue,
            f if f == Fault::CutResponses as u8 && answering => {
                // Half of the first answer chunk, then the connection is gone.
                let _ = client_write.write_all(&buf[..n / 2]).await;
                break;
            }
            _ => {
                if client_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    up.abort();
}
