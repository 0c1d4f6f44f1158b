//! SQL over HTTP against the same query over TCP, in one run, side by side
//! (docs/benchmarks.md, "The HTTP front door"):
//!
//! - `direct`: PostgreSQL, one persistent connection as `authenticator`;
//! - `tcp`: through rowgate's TCP listener, one persistent connection with
//!   a token (identity injected in every transaction);
//! - `tcp-connect`: through rowgate's TCP listener, a new connection per
//!   request (what a serverless function without the HTTP driver does);
//! - `/sql warm`: `POST /sql` with keep-alive and one token (verification
//!   cached after the first request);
//! - `/sql cold`: `POST /sql`, a token never seen before on every request
//!   (each pays an RS256 verification).
//!
//! Each is measured sequentially (latency of one client) and with
//! `--clients` concurrent clients (throughput). rowgate runs in this
//! process on the same 2 cores as the load. Loopback only.
//!
//!   scripts/bench-http.sh [--requests 2000] [--clients 8] [--seconds 5]

#[path = "common/mod.rs"]
mod common;

use common::{Cluster, Signer};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    requests: usize,
    clients: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        requests: 2000,
        clients: 8,
        seconds: 5,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (argv[i].as_str(), value) {
            ("--requests", Some(v)) => a.requests = v as usize,
            ("--clients", Some(v)) => a.clients = v as usize,
            ("--seconds", Some(v)) => a.seconds = v,
            ("--bench", _) => {
                i += 1;
                continue;
            }
            (other, _) => {
                eprintln!("usage: http [--requests N] [--clients N] [--seconds N] (got {other})");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a
}

const QUERY: &str = "select auth.user_id(), count(*) from user_messages";

/// One way of running QUERY once.
#[derive(Clone)]
enum Target {
    Direct(Arc<tokio_postgres::Client>),
    Tcp(Arc<tokio_postgres::Client>),
    TcpConnect {
        port: u16,
        token: String,
    },
    Sql {
        http: reqwest::Client,
        url: String,
        tokens: Arc<Vec<String>>,
        next: Arc<std::sync::atomic::AtomicUsize>,
    },
}

impl Target {
    async fn once(&self) -> Result<(), String> {
        match self {
            Target::Direct(c) | Target::Tcp(c) => {
                c.simple_query(QUERY).await.map_err(|e| e.to_string())?;
            }
            Target::TcpConnect { port, token } => {
                let (c, conn) = tokio_postgres::Config::new()
                    .host("127.0.0.1")
                    .port(*port)
                    .user("anyone")
                    .dbname("bench")
                    .password(token)
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                let task = tokio::spawn(conn);
                c.simple_query(QUERY).await.map_err(|e| e.to_string())?;
                drop(c);
                let _ = task.await;
            }
            Target::Sql {
                http,
                url,
                tokens,
                next,
            } => {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let token = &tokens[i % tokens.len()];
                let resp = http
                    .post(url)
                    .header(
                        "Neon-Connection-String",
                        "postgresql://anyone@rowgate.bench/bench",
                    )
                    .header("Neon-Array-Mode", "true")
                    .header("Neon-Raw-Text-Output", "true")
                    .header("Authorization", format!("Bearer {token}"))
                    .body(format!("{{\"query\":\"{QUERY}\",\"params\":[]}}"))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !resp.status().is_success() {
                    return Err(format!(
                        "HTTP {}: {}",
                        resp.status(),
                        resp.text().await.unwrap_or_default()
                    ));
                }
                resp.bytes().await.map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

struct Latency {
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
}

async fn latency(t: &Target, n: usize) -> Result<Latency, String> {
    for _ in 0..n.min(50) {
        t.once().await?;
    }
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        t.once().await?;
        us.push(start.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(|a, b| a.total_cmp(b));
    Ok(Latency {
        mean_us: us.iter().sum::<f64>() / n as f64,
        p50_us: us[n / 2],
        p99_us: us[(n * 99 / 100).min(n - 1)],
    })
}

async fn throughput(targets: Vec<Target>, seconds: u64) -> Result<f64, String> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = targets
        .into_iter()
        .map(|t| {
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    t.once().await?;
                    n += 1;
                }
                Ok::<u64, String>(n)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.map_err(|e| e.to_string())??;
    }
    Ok(total as f64 / seconds as f64)
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(args()).await {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

async fn run(a: Args) -> Result<(), String> {
    let cluster = Cluster::start(100, "bench").await?;
    let signer = Signer::new()?;
    let admin = cluster.admin().await?;
    admin
        .batch_execute("insert into user_messages (user_id, message) select 'user_' || (n % 50), 'm' || n from generate_series(1, 1000) n")
        .await
        .map_err(|e| e.to_string())?;
    let config = format!(
        "{}[http]\naddr = \"127.0.0.1:0\"\n",
        common::rowgate_toml(
            "127.0.0.1:0",
            &cluster.authenticator_url(),
            4,
            signer.public_pem_path(),
            None
        )
    );
    let server = rowgate::start(rowgate::Config::from_toml(&config).map_err(|e| e.to_string())?)
        .await
        .map_err(|e| e.to_string())?;
    let port = server.local_addr().port();
    let http_addr = server.http_addr().ok_or("no [http] address")?;
    let sign = |sub: &str| signer.sign(&signer.claims(sub, "org_1"));

    let direct = |_: usize| async {
        common::connect(&cluster.authenticator_url())
            .await
            .map(|c| Target::Direct(Arc::new(c)))
    };
    let tcp = |k: usize| {
        let token = sign(&format!("user_{k}"));
        async move {
            let (c, conn) = tokio_postgres::Config::new()
                .host("127.0.0.1")
                .port(port)
                .user("anyone")
                .dbname("bench")
                .password(&token)
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok::<Target, String>(Target::Tcp(Arc::new(c)))
        }
    };
    let sql_url = format!("http://{http_addr}/sql");
    let sql = |tokens: Vec<String>| Target::Sql {
        http: http_client(),
        url: sql_url.clone(),
        tokens: Arc::new(tokens),
        next: Arc::new(Default::default()),
    };
    // Cold: enough fresh tokens that none repeats within a run.
    eprintln!("minting tokens for the cold path ...");
    let cold_count = a.requests.max(400);
    let cold_tokens: Vec<String> = (0..cold_count)
        .map(|k| {
            // A distinct jti: RS256 signatures are deterministic, and two
            // equal claim sets would make one token, cached after its first use.
            let mut claims = signer.claims(&format!("user_{}", k % 50), "org_1");
            claims["jti"] = format!("cold-{k}").into();
            signer.sign(&claims)
        })
        .collect();

    let mut rows = Vec::new();
    let mut report = |name: &str, lat: Latency, rps: Option<f64>| {
        let line = format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {} |",
            lat.mean_us,
            lat.p50_us,
            lat.p99_us,
            rps.map_or("-".to_string(), |r| format!("{r:.0}"))
        );
        eprintln!("{line}");
        rows.push(line);
    };

    eprintln!("direct ...");
    let t = direct(0).await?;
    let lat = latency(&t, a.requests).await?;
    let mut ts = Vec::new();
    for k in 0..a.clients {
        ts.push(direct(k).await?);
    }
    report(
        "PostgreSQL directly, persistent connection",
        lat,
        Some(throughput(ts, a.seconds).await?),
    );

    eprintln!("tcp ...");
    let t = tcp(0).await?;
    let lat = latency(&t, a.requests).await?;
    let mut ts = Vec::new();
    for k in 0..a.clients {
        ts.push(tcp(k).await?);
    }
    report(
        "rowgate TCP, persistent connection",
        lat,
        Some(throughput(ts, a.seconds).await?),
    );

    eprintln!("tcp-connect ...");
    let mk = |k: usize| Target::TcpConnect {
        port,
        token: sign(&format!("user_{k}")),
    };
    let lat = latency(&mk(0), a.requests / 4).await?;
    report(
        "rowgate TCP, new connection per request",
        lat,
        Some(throughput((0..a.clients).map(mk).collect(), a.seconds).await?),
    );

    eprintln!("/sql warm ...");
    let lat = latency(&sql(vec![sign("user_1")]), a.requests).await?;
    let ts = (0..a.clients)
        .map(|k| sql(vec![sign(&format!("user_{k}"))]))
        .collect();
    report(
        "rowgate POST /sql, warm (token cached)",
        lat,
        Some(throughput(ts, a.seconds).await?),
    );

    eprintln!("/sql cold ...");
    // The warm-up requests of `latency` use tokens too; all are fresh.
    let lat = latency(&sql(cold_tokens), cold_count - 50).await?;
    report(
        "rowgate POST /sql, cold (new token each request)",
        lat,
        None,
    );

    let md = format!(
        "Query: `{QUERY}`; {} sequential requests per row ({} for new connections), then {} clients for {} s.\n\n\
         | path | mean µs | p50 µs | p99 µs | req/s ({} clients) |\n|---|---|---|---|---|\n{}\n",
        a.requests,
        a.requests / 4,
        a.clients,
        a.seconds,
        a.clients,
        rows.join("\n")
    );
    println!("{md}");
    let dir = common::report_dir();
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("http.md"), &md);
    server.stop();
    Ok(())
}

/// reqwest is built without a default TLS provider (rowgate picks ring);
/// install it once, then build a client (plain HTTP to loopback here).
fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
