//! The key store on a real PostgreSQL (tests/env/pg-up: Debian's server on
//! a loopback port, its own data directory): the operation suite
//! (tests/store/suite.rs), and what only a server has: migrations raced
//! by several connections, the server stopped and started again under a
//! live store, a server that never answers, a call held by a lock, logins
//! and TLS by `sslmode`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step is a failed test"
)]

#[path = "env/pg.rs"]
mod pg;
#[path = "store/suite.rs"]
mod suite;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use autoencrypt_milter::Method;
use autoencrypt_milter::store::{
    LearnedFrom, LearnedKey, SCHEMA_VERSION, Store, StoreError, StoreSettings,
};
use pg::PgEnv;

fn settings(env: &PgEnv, url: String) -> StoreSettings {
    StoreSettings {
        url,
        password_file: Some(env.password_file()),
        ca_file: None,
        connect_timeout: Duration::from_secs(3),
        timeout: Duration::from_secs(2),
    }
}

struct Pg {
    env: PgEnv,
}

impl suite::Backend for Pg {
    fn open(&self) -> Result<Store, StoreError> {
        Store::open(&settings(&self.env, self.env.url("aem")))
    }

    fn raw(&self, sql: &str) -> String {
        self.env.psql("aem", sql)
    }
}

suite_tests!(Pg { env: PgEnv::start() };
    learned_keys_follow_the_update_rule,
    list_and_forget,
    pins,
    first_sight_is_trusted_then_changes_wait_for_review,
    accepted_changes_are_recorded_approved,
    a_change_is_counted_once_by_two_handles,
    last_seen_is_written_at_most_hourly,
    two_handles_see_each_others_writes,
    opening_again_keeps_everything,
    bad_rows_are_errors_naming_the_row,
    a_newer_schema_is_refused,
);

fn key(address: &str, effective: i64) -> LearnedKey {
    LearnedKey {
        address: address.to_owned(),
        method: Method::OpenPgp,
        fingerprint: suite::fp('A'),
        key: b"key".to_vec(),
        how: LearnedFrom::Autocrypt,
        prefer_encrypt: None,
        effective,
        first_seen: effective,
        last_seen: effective,
    }
}

#[tokio::test]
async fn migrations_raced_by_several_connections_apply_once() {
    let env = PgEnv::start();
    for round in 0..4 {
        let db = format!("race{round}");
        env.create_database(&db);
        let stores: Vec<Store> = (0..5)
            .map(|_| Store::open(&settings(&env, env.url(&db))).unwrap())
            .collect();
        // Each store is its own connection; all connect and migrate at once.
        let (a, b, c, d, e) = tokio::join!(
            stores[0].ping(),
            stores[1].ping(),
            stores[2].ping(),
            stores[3].ping(),
            stores[4].ping(),
        );
        for r in [a, b, c, d, e] {
            r.unwrap();
        }
        assert_eq!(
            env.psql(&db, "SELECT count(*), max(version) FROM schema_migrations"),
            format!("{SCHEMA_VERSION}|{SCHEMA_VERSION}")
        );
        // A second process starting later finds the schema and leaves it.
        let later = Store::open(&settings(&env, env.url(&db))).unwrap();
        later.all_pins().await.unwrap();
        assert_eq!(
            env.psql(&db, "SELECT count(*) FROM schema_migrations"),
            SCHEMA_VERSION.to_string()
        );
    }
}

#[tokio::test]
async fn the_server_stopped_is_an_error_and_started_again_is_used_again() {
    let mut env = PgEnv::start();
    let mut st = settings(&env, env.url("aem"));
    st.timeout = Duration::from_secs(2);
    st.connect_timeout = Duration::from_secs(2);
    let s = Store::open(&st).unwrap();
    let k = key("mallory@example.org", 1);
    s.learn(&k).await.unwrap();

    env.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let e = s.learned(&k.address, k.method).await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
        assert!(took < Duration::from_secs(2), "took {took:?}: {e}");
        assert!(e.to_string().contains(&s.describe()), "{e}");
        assert!(e.to_string().contains("read a learned key"), "{e}");
    }

    env.start_again();
    // The same store connects again by itself.
    assert_eq!(s.learned(&k.address, k.method).await.unwrap(), Some(k));
    let connects = env
        .log()
        .matches("connection authorized: user=aem database=aem application_name=autoencrypt-milter")
        .count();
    assert!(connects >= 1, "{}", env.log());
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts, holds every connection, never writes a byte.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().take(8) {
            match c {
                Ok(c) => held.push(c),
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    for sslmode in ["disable", "require"] {
        let s = Store::open(&StoreSettings {
            url: format!("postgres://aem@127.0.0.1:{port}/aem?sslmode={sslmode}"),
            password_file: Some(pw.clone()),
            ca_file: None,
            connect_timeout: Duration::from_millis(300),
            timeout: Duration::from_millis(500),
        })
        .unwrap();
        let started = Instant::now();
        let e = s.ping().await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(e, StoreError::Timeout { .. }), "{sslmode}: {e}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
            "{sslmode}: took {took:?}"
        );
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}

#[tokio::test]
async fn a_call_held_by_a_lock_times_out_and_the_next_one_connects_again() {
    let env = PgEnv::start();
    let mut st = settings(&env, env.url("aem"));
    st.timeout = Duration::from_millis(400);
    let s = Store::open(&st).unwrap();
    s.learn(&key("nina@example.org", 1)).await.unwrap();
    // Another session holds the table for 2 s.
    let mut holder = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-h",
            env.var("PG_SOCKET_DIR"),
            "-p",
            env.var("PG_PORT"),
        ])
        .args(["-U", "postgres", "-d", "aem", "-c"])
        .arg("BEGIN; LOCK TABLE learned_keys; SELECT pg_sleep(2); COMMIT;")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the lock is taken.
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.psql(
        "aem",
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         WHERE c.relname = 'learned_keys' AND l.mode = 'AccessExclusiveLock' AND l.granted",
    ) != "1"
    {
        assert!(Instant::now() < deadline, "psql did not take the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let e = s.learn(&key("nina@example.org", 2)).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, StoreError::Timeout { .. }), "{e}");
    assert!(took < Duration::from_millis(1200), "took {took:?}");
    holder.wait().unwrap();
    // The timed-out connection was dropped; the next call makes a new one.
    assert_eq!(
        s.learned("nina@example.org", Method::OpenPgp)
            .await
            .unwrap()
            .unwrap()
            .effective,
        1,
        "the timed-out write did not happen"
    );
    let connects = env
        .log()
        .matches("connection authorized: user=aem database=aem application_name=autoencrypt-milter")
        .count();
    assert_eq!(connects, 2, "{}", env.log());
}

/// How many times the store logged in over TLS (pg-up's own check is
/// psql's, another application name).
fn tls_logins(env: &PgEnv) -> usize {
    env.log()
        .lines()
        .filter(|l| {
            l.contains(
                "connection authorized: user=aem database=aem application_name=autoencrypt-milter",
            ) && l.contains("SSL enabled")
        })
        .count()
}

#[tokio::test]
async fn logins_and_tls_as_sslmode_says() {
    let env = PgEnv::start();
    let open = |url: String, ca: Option<PathBuf>, pw: Option<PathBuf>| {
        Store::open(&StoreSettings {
            url,
            password_file: pw,
            ca_file: ca,
            connect_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(2),
        })
        .unwrap()
    };
    let pw = Some(env.password_file());
    let ok = |s: Store| async move { s.ping().await.map(|()| s.describe()) };

    // No TLS.
    ok(open(env.url("aem"), None, pw.clone())).await.unwrap();
    assert_eq!(tls_logins(&env), 0, "{}", env.log());
    // The test CA only: verified, by IP address and by name.
    for host in ["127.0.0.1", "localhost"] {
        let d = ok(open(
            env.url_tls(host, "aem", "verify-full"),
            Some(env.ca_file()),
            pw.clone(),
        ))
        .await
        .unwrap();
        assert_eq!(d, format!("postgres {host}:{}/aem", env.port()));
    }
    assert_eq!(tls_logins(&env), 2, "{}", env.log());
    // require encrypts without checking (libpq's meaning) ...
    ok(open(
        env.url_tls("127.0.0.1", "aem", "require"),
        None,
        pw.clone(),
    ))
    .await
    .unwrap();
    assert_eq!(tls_logins(&env), 3);
    // ... verify-ca checks the chain: the system roots do not know the test CA,
    for (ca, mode) in [
        (None, "verify-ca"),
        (Some(env.wrong_ca_file()), "verify-full"),
    ] {
        let e = ok(open(env.url_tls("127.0.0.1", "aem", mode), ca, pw.clone()))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Unavailable { .. }), "{mode}: {e}");
        assert!(
            e.to_string().contains("certificate verify failed"),
            "{mode}: {e}"
        );
    }
    // ... and a ca_file makes require check it too (the wrong CA fails).
    let e = ok(open(
        env.url_tls("127.0.0.1", "aem", "require"),
        Some(env.wrong_ca_file()),
        pw.clone(),
    ))
    .await
    .unwrap_err();
    assert!(e.to_string().contains("certificate verify failed"), "{e}");
    // verify-full checks the name; verify-ca does not.
    let other_name = format!(
        "postgres://aem@db.other.test:{}/aem?hostaddr=127.0.0.1&sslmode=",
        env.port()
    );
    let e = ok(open(
        format!("{other_name}verify-full"),
        Some(env.ca_file()),
        pw.clone(),
    ))
    .await
    .unwrap_err();
    assert!(e.to_string().contains("certificate verify failed"), "{e}");
    ok(open(
        format!("{other_name}verify-ca"),
        Some(env.ca_file()),
        pw.clone(),
    ))
    .await
    .unwrap();

    // A wrong password: refused, and never shown.
    let wrong = std::fs::read_to_string(env.wrong_password_file()).unwrap();
    let e = ok(open(env.url("aem"), None, Some(env.wrong_password_file())))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("password authentication failed"),
        "{e}"
    );
    assert!(!e.to_string().contains(wrong.trim()), "{e}");
    assert!(!format!("{e:?}").contains(wrong.trim()), "{e:?}");
    // No password at all.
    let e = ok(open(env.url("aem"), None, None)).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
    // A password in the URL is refused before anything is sent.
    let right = std::fs::read_to_string(env.password_file()).unwrap();
    let url = format!(
        "postgres://aem:{}@127.0.0.1:{}/aem",
        right.trim(),
        env.port()
    );
    let e = Store::open(&settings(&env, url)).unwrap_err();
    assert!(matches!(e, StoreError::Setup { .. }), "{e}");
    assert!(!e.to_string().contains(right.trim()), "{e}");
    // An unreadable CA file is a setup error.
    let e = Store::open(&StoreSettings {
        ca_file: Some(env.dir().join("nonexistent.pem")),
        ..settings(&env, env.url_tls("127.0.0.1", "aem", "verify-full"))
    })
    .unwrap_err();
    assert!(matches!(e, StoreError::Setup { .. }), "{e}");
    assert!(e.to_string().contains("nonexistent.pem"), "{e}");
}
