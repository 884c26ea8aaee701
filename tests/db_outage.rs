//! PostgreSQL gone for 30 s under a node (#27): 周村区 on PostgreSQL, reached through a fault
//! proxy that cuts every open connection and refuses new ones, relaying to 信用淄博. While the
//! database is away, readiness turns false and pushes are answered 503 `store_unavailable` with
//! `Retry-After`, each within 5 s: never a 500, never a hang, never a panic. Once it is back,
//! the node recovers by itself and the relay delivers everything acknowledged. The same holds
//! when the database's port refuses connections, and when connections are taken and never
//! answered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use credit_gateway::bench::synthetic_records;
use gateway_core::crypto::Alg;
use testkit::proxy::{Fault, FaultProxy};

const DISTRICT: &str = "cn-370306";
const CITY: &str = "cn-370300";
const OUTAGE: Duration = Duration::from_secs(30);

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// A new database on the test server, and a fault proxy in front of the server: the database's
/// URL, the proxy, and the URL that goes through it.
async fn database_behind_a_proxy() -> (String, FaultProxy, String) {
    let url = testkit::new_postgres_database().await;
    let server: u16 = url
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .map_or(5432, |p| p.parse().expect("the test server's port"));
    let proxy = FaultProxy::start(server).await.expect("fault proxy");
    let through_proxy = url.replacen(&format!("127.0.0.1:{server}"), &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(through_proxy, url, "the database URL names 127.0.0.1: {url}");
    (url, proxy, through_proxy)
}

async fn push(client: &reqwest::Client, api: &str, seed: u64) -> (u16, Option<String>, String, Duration) {
    let asked = Instant::now();
    let resp = client
        .post(format!("{api}/api/v1/records"))
        .json(&synthetic_records(50, seed))
        .send()
        .await
        .expect("the node answers");
    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let status = resp.status().as_u16();
    (status, retry, resp.text().await.unwrap_or_default(), asked.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_away_for_30_s_gives_503s_at_once_and_the_relay_resumes_after() {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        hook(info);
    }));
    let (url, proxy, through_proxy) = database_behind_a_proxy().await;
    let (dir, pki) = testkit::demo_pki(Alg::EdDsa);
    let (running, _nodes, _relays) = testkit::federation(dir.path(), &pki, &[DISTRICT, CITY], |member, c| {
        if member == DISTRICT {
            c.database_url = Some(through_proxy.clone());
        }
    })
    .await;
    let (district, city) = (&running[0].api, &running[1].api);
    let client = reqwest::Client::new();

    let mut acknowledged = 0;
    for seed in 0..3 {
        let (status, _, body, _) = push(&client, district, seed).await;
        assert_eq!(status, 200, "{body}");
        acknowledged += 50;
    }

    // The database goes away: open connections cut, new ones refused.
    proxy.set(Fault::Down);
    proxy.cut();
    let down = Instant::now();
    testkit::eventually("readiness false", Duration::from_secs(5), async || {
        client.get(format!("{district}/readyz")).send().await.is_ok_and(|r| r.status() == 503)
    })
    .await;
    println!("readiness false {:?} after the database went away", down.elapsed());
    let mut refused = 0;
    let mut seed = 100;
    while down.elapsed() < OUTAGE {
        let (status, retry, body, took) = push(&client, district, seed).await;
        assert_eq!(status, 503, "a push while the database is away: {body}");
        assert!(body.contains("\"store_unavailable\""), "{body}");
        assert!(retry.is_some(), "503 with Retry-After");
        assert!(took < Duration::from_secs(5), "answered within 5 s, not {took:?}");
        let ready = client.get(format!("{district}/readyz")).send().await.expect("readyz");
        assert_eq!(ready.status(), 503, "not ready while the database is away");
        refused += 1;
        seed += 1;
    }
    println!("{refused} pushes refused with 503 during the {OUTAGE:?} outage");

    // Back: the node recovers by itself, and the relay delivers everything acknowledged.
    proxy.set(Fault::None);
    testkit::eventually("ready again", Duration::from_secs(30), async || {
        client.get(format!("{district}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let (status, _, body, _) = push(&client, district, 1_000).await;
    assert_eq!(status, 200, "{body}");
    acknowledged += 50;
    testkit::eventually("everything acknowledged at 信用淄博", Duration::from_secs(60), async || {
        testkit::metric(&client, city, "credit_gateway_records_stored").await == Some(acknowledged as f64)
    })
    .await;
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "no panic anywhere in the node");
    drop(running);
    testkit::drop_postgres_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_on_an_outage_is_a_503_not_a_refused_credential() {
    let (url, proxy, through_proxy) = database_behind_a_proxy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = testkit::config(dir.path());
    config.database_url = Some(through_proxy);
    config.auth.required = true;
    let hash = credit_gateway::dashboard::auth::hash_password("正确的密码", 1_000).expect("hash");
    config.dashboard.operators =
        vec![credit_gateway::config::Operator { name: "ops".into(), password_hash: hash, role: None }];
    let node = testkit::start(config).await;
    let key = testkit::issue_key(&node.app, "operator", "值班员", None).await;
    credit_gateway::tls::install_crypto_provider();
    let client = reqwest::Client::new();
    let read = |key: String| {
        let (client, url) = (client.clone(), format!("{}/api/v1/records?limit=1", node.api));
        async move {
            let resp = client.get(url).bearer_auth(key).send().await.expect("answered");
            (resp.status().as_u16(), resp.text().await.unwrap_or_default())
        }
    };
    assert_eq!(read(key.clone()).await.0, 200);
    // The operator's browser: it keeps the session cookie, and the test sees the redirect.
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let login = browser
        .post(format!("{}/dashboard/login", node.api))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=ops&password=%E6%AD%A3%E7%A1%AE%E7%9A%84%E5%AF%86%E7%A0%81")
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 303, "the operator logs in");
    let cookie = login.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("cookie").to_owned();
    let page = |path: &'static str| {
        let (browser, url, cookie) = (browser.clone(), format!("{}{path}", node.api), cookie.clone());
        async move {
            let resp = browser.get(url).header("cookie", cookie).send().await.expect("answered");
            let retry = resp.headers().contains_key("retry-after");
            (resp.status().as_u16(), retry, resp.text().await.unwrap_or_default())
        }
    };
    assert_eq!(page("/dashboard/sla").await.0, 200);

    proxy.set(Fault::Down);
    proxy.cut();
    // More than the failed-attempt burst (10): none of them may count as a wrong credential.
    for attempt in 0..15 {
        let asked = Instant::now();
        let presented = if attempt % 2 == 0 { key.clone() } else { format!("cgk_wrong{attempt}") };
        let (status, body) = read(presented).await;
        assert_eq!(status, 503, "attempt {attempt}: {body}");
        assert!(body.contains("\"store_unavailable\""), "{body}");
        assert!(asked.elapsed() < Duration::from_secs(5), "answered within 5 s, not {:?}", asked.elapsed());
    }
    // The operator's pages say the database is away (503, not a 500 "see the log").
    for path in ["/dashboard", "/dashboard/sla", "/dashboard/quality"] {
        let (status, retry, body) = page(path).await;
        assert_eq!(status, 503, "{path} during the outage: {body}");
        assert!(retry, "{path}: 503 with Retry-After");
        assert!(body.contains("数据库暂时无法连接"), "{path}: {body}");
    }
    // The database's port closed (connections refused), then a route that takes connections
    // and never answers (a dead virtual IP): each call still gets its 503 within 5 s.
    for fault in [Fault::Refused, Fault::Blackhole] {
        proxy.set(fault);
        proxy.cut();
        for attempt in 0..2 {
            let asked = Instant::now();
            let (status, body) = read(key.clone()).await;
            assert_eq!(status, 503, "{fault:?}, attempt {attempt}: {body}");
            assert!(body.contains("\"store_unavailable\""), "{body}");
            let took = asked.elapsed();
            assert!(took < Duration::from_secs(5), "{fault:?}: answered within 5 s, not {took:?}");
            println!("{fault:?}: 503 after {took:?}");
        }
    }

    proxy.set(Fault::None);
    proxy.cut();
    testkit::eventually("the right key works again", Duration::from_secs(30), async || {
        read(key.clone()).await.0 == 200
    })
    .await;
    let (status, body) = read("cgk_wrong".into()).await;
    assert_eq!(status, 401, "a wrong key is a wrong key again, not yet rate-limited: {body}");
    drop(node);
    testkit::drop_postgres_database(&url).await;
}
