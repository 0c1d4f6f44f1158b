//! Criterion micro-benchmarks of rowgate's two per-message and
//! per-connection hot spots: framing server output (`wire::next_frame` over
//! DataRow messages) and JWT verification (`Authenticator::authenticate`),
//! cold (a token never seen) and cached (the same token again).
//!
//! `cargo bench --bench micro` (scripts/bench-perf.sh runs it too).

use bytes::{BufMut, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rowgate::auth::mint::{clerk_session_claims, generate_rsa_keypair, sign_rs256};
use rowgate::auth::Authenticator;
use rowgate::wire::{next_frame, put_frame, MAX_MESSAGE_LEN};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ISSUER: &str = "https://clerk.micro.example";

/// `n` DataRow messages like a pgbench_accounts row (4 text columns).
fn data_rows(n: usize) -> BytesMut {
    let cols: [&[u8]; 4] = [
        b"123456",
        b"7",
        b"0",
        b"                                                                                    ",
    ];
    let mut buf = BytesMut::new();
    for _ in 0..n {
        put_frame(&mut buf, b'D', |b| {
            b.put_i16(cols.len() as i16);
            for c in cols {
                b.put_i32(c.len() as i32);
                b.put_slice(c);
            }
        });
    }
    buf
}

fn framing(c: &mut Criterion) {
    const ROWS: usize = 1000;
    let buf = data_rows(ROWS);
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("next_frame/1000 DataRows", |b| {
        b.iter_batched_ref(
            || buf.clone(),
            |buf| {
                let mut n = 0;
                while let Ok(Some(f)) = next_frame(buf, MAX_MESSAGE_LEN) {
                    n += f.as_bytes().len();
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// An authenticator for a fresh key pair's public PEM, and its private PEM.
struct Keys {
    private_pem: String,
    config: rowgate::Config,
    _dir: std::path::PathBuf,
}

impl Keys {
    fn new() -> Keys {
        let (private_pem, public_pem) = generate_rsa_keypair().expect("RSA keygen");
        let dir = std::env::temp_dir().join(format!("rowgate-micro-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pem = dir.join("public.pem");
        std::fs::write(&pem, public_pem).expect("write public.pem");
        let toml = format!(
            "[upstream]\nurl = \"postgres://a:b@127.0.0.1:5432/x\"\n[auth]\nissuer = \"{ISSUER}\"\npublic_key_file = \"{}\"\n",
            pem.display()
        );
        let config = rowgate::Config::from_toml(&toml).expect("micro config");
        Keys {
            private_pem,
            config,
            _dir: dir,
        }
    }

    fn token(&self, sub: &str) -> String {
        sign_rs256(
            &self.private_pem,
            Some("micro-1"),
            &clerk_session_claims(sub, ISSUER, 3600),
        )
        .expect("sign")
    }

    async fn authenticator(&self) -> Arc<Authenticator> {
        Authenticator::new(&self.config.auth, &self.config.identity)
            .await
            .expect("authenticator")
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn jwt(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let keys = Keys::new();
    // Distinct tokens for the cold case; signing is slow, so a few hundred
    // are reused with a fresh (empty-cache) authenticator for each pass.
    const DISTINCT: usize = 300;
    let tokens: Vec<String> = (0..DISTINCT)
        .map(|i| keys.token(&format!("user_micro_{i:04}")))
        .collect();
    let mut g = c.benchmark_group("jwt");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("authenticate/cold RS256", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut spent = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    let auth = keys.authenticator().await;
                    for t in tokens
                        .iter()
                        .take((iters - done).min(DISTINCT as u64) as usize)
                    {
                        let start = Instant::now();
                        let id = auth.authenticate(t, "bench").await;
                        spent += start.elapsed();
                        assert!(id.is_ok(), "cold token refused");
                        done += 1;
                    }
                }
                spent
            })
        })
    });
    let auth = rt.block_on(keys.authenticator());
    let token = &tokens[0];
    rt.block_on(auth.authenticate(token, "bench"))
        .expect("warm the cache");
    g.bench_function("authenticate/cached", |b| {
        b.iter(|| rt.block_on(auth.authenticate(token, "bench")))
    });
    g.finish();
}

criterion_group!(benches, framing, jwt);
criterion_main!(benches);
