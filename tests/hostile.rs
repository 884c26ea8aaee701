//! Clients that misbehave, against a real `credit-gateway serve` process (#26):
//! - a client that writes a whole oversize or deeply nested body before reading gets the 4xx,
//!   not a broken pipe;
//! - 500 idle and 200 slowloris connections neither stall a normal request nor stay open past
//!   the header-read timeout;
//! - one client with many requests in progress is told to come back, and the others are served.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A node whose header-read timeout is `secs` seconds.
fn node(dir: &Path, secs: u64) -> testkit::Node {
    let config = dir.join("node.toml");
    std::fs::write(&config, format!("[limits]\nheader_read_timeout_secs = {secs}\n")).expect("config");
    testkit::Node::start_with(&dir.join("data"), &["--config", config.to_str().expect("utf-8")])
}

fn address(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// Writes a whole request (headers and `body`) before reading anything, as Python's
/// http.client does, then reads the answer: its status line, and what came with it.
fn write_all_then_read(addr: &str, path: &str, content_type: &str, body: &[u8]) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("headers");
    stream.write_all(body).unwrap_or_else(|e| panic!("writing the {} byte body to {path}: {e}", body.len()));
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).expect("read the answer");
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    (text.lines().next().unwrap_or_default().to_owned(), text)
}

#[test]
fn a_client_that_writes_its_whole_body_first_reads_the_refusal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node(dir.path(), 10);
    let addr = address(&node.base);
    // Over the 16 MiB body limit, ten times over: each is answered 413.
    let oversize = vec![b' '; 20 << 20];
    for _ in 0..10 {
        let (status, _) = write_all_then_read(&addr, "/api/v1/records", "application/json", &oversize);
        assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    }
    // 10,000 nested brackets: a 400 for the request, not a record rejected as bad JSON.
    let nested = format!("[{}{}]", "[".repeat(10_000), "]".repeat(10_000));
    let (status, body) = write_all_then_read(&addr, "/api/v1/records", "application/json", nested.as_bytes());
    assert!(status.starts_with("HTTP/1.1 400") && body.contains("too_deep"), "{body}");
    // A JSON route whose limit is smaller than the push's: its 413 is read too, and is the
    // node's bilingual JSON error like any other.
    let (status, body) = write_all_then_read(&addr, "/api/v1/checks", "application/json", &vec![b' '; 5 << 20]);
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    assert!(body.contains("\"payload_too_large\"") && body.contains("message_zh"), "{body}");
    // A request head over 64 KiB: 431.
    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(100 << 10));
    let _ = stream.write_all(head.as_bytes());
    let mut answer = [0u8; 64];
    let n = stream.read(&mut answer).expect("the answer");
    assert!(answer[..n].starts_with(b"HTTP/1.1 431"), "{}", String::from_utf8_lossy(&answer[..n]));
    // The node still serves.
    let (status, _) = write_all_then_read(&addr, "/api/v1/records", "application/json", b"[]");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_after_the_timeout_and_stall_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const TIMEOUT: u64 = 2;
    credit_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node(dir.path(), TIMEOUT);
    let addr = address(&node.base);
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.expect("idle connection"));
    }
    // Slowloris: a request line, then a header byte every 200 ms, never finished.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("slow connection");
        slow.push(tokio::spawn(async move {
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if stream.write_all(b"a").await.is_err() {
                    return started.elapsed();
                }
                let mut buf = [0u8; 1];
                // Closed by the node: a read ends (EOF or reset) instead of waiting.
                if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await
                {
                    return started.elapsed();
                }
                assert!(started.elapsed() < Duration::from_secs(30), "a slow client was never closed");
            }
        }));
    }

    // With all of them open, a normal request is answered within a second.
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let asked = Instant::now();
        let resp = client.get(format!("{}/healthz", node.base)).send().await.expect("healthz");
        assert_eq!(resp.status(), 200);
        assert!(asked.elapsed() < Duration::from_secs(1), "healthz took {:?}", asked.elapsed());
    }

    // The idle ones are closed once the timeout has passed since they opened.
    for mut stream in idle {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(TIMEOUT + 8), stream.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0) | Err(_))), "an idle connection still open: {closed:?}");
    }
    let idle_closed = opened.elapsed();
    let mut longest = Duration::ZERO;
    for task in slow {
        longest = longest.max(task.await.expect("slow client"));
    }
    assert!(longest < Duration::from_secs(TIMEOUT + 3), "a slowloris connection lasted {longest:?}");
    eprintln!("500 idle closed {idle_closed:?} after opening; slowloris connections lasted at most {longest:?}");
}

/// Push bodies held at once are bounded (`limits.max_body_bytes_in_flight`): while one client
/// holds the whole budget with a body it is still sending, another push waits, then is told
/// to come back (503 `busy` with `Retry-After`) instead of queueing for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_beyond_the_memory_budget_are_told_to_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = testkit::config(dir.path());
    config.limits.max_body_bytes = 1 << 20;
    config.limits.max_body_bytes_in_flight = 1 << 20;
    let node = testkit::start(config).await;
    let addr = address(&node.api);
    let head = |len: usize| {
        format!(
            "POST /api/v1/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    // Holds the budget: a 1 MiB body of which only the start is sent.
    let mut holder = TcpStream::connect(&addr).expect("connect");
    holder.write_all(head(1 << 20).as_bytes()).expect("headers");
    holder.write_all(b"[").expect("a first byte");
    let budget = std::sync::Arc::clone(&node.app.ingest.bodies_in_flight);
    testkit::eventually("the first push holding the budget", Duration::from_secs(10), async || {
        budget.available_permits() == 0
    })
    .await;
    let asked = Instant::now();
    let (status, answer) =
        tokio::task::spawn_blocking(move || write_all_then_read(&addr, "/api/v1/records", "application/json", b"[]"))
            .await
            .expect("join");
    assert!(status.starts_with("HTTP/1.1 503") && answer.contains("\"busy\""), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    assert!(asked.elapsed() >= Duration::from_secs(4), "it waited for room first: {:?}", asked.elapsed());
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_more_than_its_share_of_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = testkit::config(dir.path());
    config.auth.required = true;
    config.auth.max_in_flight = 2;
    let node = testkit::start(config).await;
    let market =
        testkit::issue_key(&node.app, "department", "淄博市周村区市场监督管理局", Some("11370306MB28554702")).await;
    let ecology =
        testkit::issue_key(&node.app, "department", "淄博市周村区生态环境分局", Some("11370306004217500P")).await;
    let addr = address(&node.api);
    // Two pushes of the market department in progress: their bodies' first byte only.
    let hold = |key: &str| {
        let mut stream = TcpStream::connect(&addr).expect("connect");
        let head = format!(
            "POST /api/v1/records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n["
        );
        stream.write_all(head.as_bytes()).expect("a held push");
        stream
    };
    let mut held = [hold(&market), hold(&market)];
    credit_gateway::tls::install_crypto_provider();
    let client = reqwest::Client::new();
    let push = |key: String| {
        let (client, url) = (client.clone(), format!("{}/api/v1/records", node.api));
        async move {
            let resp = client.post(url).bearer_auth(key).json(&serde_json::json!([])).send().await.expect("push");
            let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap_or_default().to_owned());
            (resp.status().as_u16(), retry, resp.text().await.unwrap_or_default())
        }
    };
    // Once both are in progress, a third of the same client is refused at once…
    testkit::eventually("both held pushes in progress", Duration::from_secs(10), async || {
        push(market.clone()).await.0 == 503
    })
    .await;
    let asked = Instant::now();
    let (status, retry, body) = push(market.clone()).await;
    assert_eq!((status, retry.as_deref()), (503, Some("1")), "{body}");
    assert!(body.contains("\"too_many_in_flight\""), "{body}");
    assert!(asked.elapsed() < Duration::from_secs(1), "refused without waiting: {:?}", asked.elapsed());
    // … while another client is served.
    assert_eq!(push(ecology.clone()).await.0, 200);
    // The held pushes complete and are answered; their slots are free again.
    for stream in &mut held {
        stream.write_all(b"]").expect("the rest of the body");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).expect("the held push's answer");
        assert_eq!(&answer, b"HTTP/1.1 200");
    }
    testkit::eventually("the market department served again", Duration::from_secs(10), async || {
        push(market.clone()).await.0 == 200
    })
    .await;
}
