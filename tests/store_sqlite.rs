//! The key store on SQLite files: the operation suite (tests/store/suite.rs),
//! and what only SQLite has: the file and its directory created
//! owner-only, WAL, a second process's lock waited for within the
//! timeout, an unopenable path refused at open.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step is a failed test"
)]

#[path = "store/suite.rs"]
mod suite;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autoencrypt_milter::store::{Store, StoreError, StoreSettings};
use tempfile::TempDir;

fn settings(path: &Path) -> StoreSettings {
    StoreSettings {
        url: format!("sqlite://{}", path.display()),
        password_file: None,
        ca_file: None,
        connect_timeout: Duration::from_secs(3),
        timeout: Duration::from_secs(2),
    }
}

struct Sqlite {
    _dir: TempDir,
    path: PathBuf,
}

impl Sqlite {
    fn new() -> Sqlite {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("keys.sqlite");
        Sqlite { _dir: dir, path }
    }
}

impl suite::Backend for Sqlite {
    fn open(&self) -> Result<Store, StoreError> {
        Store::open(&settings(&self.path))
    }

    fn raw(&self, sql: &str) -> String {
        let c = rusqlite::Connection::open(&self.path).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        let mut stmt = c.prepare(sql).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        let mut out = Vec::new();
        while let Some(r) = rows.next().unwrap() {
            let cols: Vec<String> = (0..n)
                .map(|i| match r.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Null => String::new(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    v => format!("{v:?}"),
                })
                .collect();
            out.push(cols.join("|"));
        }
        out.join("\n")
    }
}

suite_tests!(Sqlite::new();
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

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn file_and_directories_are_owner_only_and_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("keys.sqlite");
    let s = Store::open(&settings(&path)).unwrap();
    assert_eq!(s.describe(), format!("sqlite {}", path.display()));
    s.ping().await.unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    let c = rusqlite::Connection::open(&path).unwrap();
    let journal: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    // SQLite's own -wal and -shm files take the database file's mode.
    for suffix in ["-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", path.display()));
        assert_eq!(mode(&p) & 0o077, 0, "{}", p.display());
    }
}

#[tokio::test]
async fn another_process_holding_the_lock_is_waited_for_then_a_timeout() {
    let b = Sqlite::new();
    let mut st = settings(&b.path);
    st.timeout = Duration::from_millis(300);
    let s = Store::open(&st).unwrap();
    let k = |c: char| (suite::fp(c), vec![1u8]);
    // Another connection (as another process would) takes the write lock.
    let other = rusqlite::Connection::open(&b.path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let e = s
        .observe(
            "dane",
            "a@example.org",
            autoencrypt_milter::Method::Smime,
            &[k('A')],
            true,
            1,
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            e,
            StoreError::Unavailable { .. } | StoreError::Timeout { .. }
        ),
        "{e}"
    );
    assert!(took >= Duration::from_millis(250), "gave up after {took:?}");
    assert!(took < Duration::from_secs(2), "waited {took:?}");
    // Reads go on beside a writer (WAL).
    s.list_learned(None).await.unwrap();
    // Released within the timeout: the write goes through.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        other.execute_batch("COMMIT").unwrap();
    });
    s.observe(
        "dane",
        "a@example.org",
        autoencrypt_milter::Method::Smime,
        &[k('A')],
        true,
        1,
    )
    .await
    .unwrap();
    release.join().unwrap();
}

#[test]
fn unusable_paths_and_urls_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "not a directory").unwrap();
    let e = Store::open(&settings(&file.join("keys.sqlite"))).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains(&file.display().to_string()), "{e}");
    // A file that is not a database.
    let junk = dir.path().join("junk.sqlite");
    std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
    let e = Store::open(&settings(&junk)).unwrap_err();
    assert!(e.to_string().contains("junk.sqlite"), "{e}");
    for url in ["sqlite://", "mysql://h/db", "/var/lib/keys.sqlite"] {
        let e = Store::open(&StoreSettings {
            url: url.into(),
            ..settings(&junk)
        })
        .unwrap_err();
        assert!(matches!(e, StoreError::Setup { .. }), "{url}: {e}");
    }
}

/// As root (CI, this machine): a store created in a directory of another
/// user (the milter's state directory) belongs to that user, so that the
/// milter can open what `keys import` run as root made. Not as root: the
/// file is simply the caller's.
#[tokio::test]
async fn a_new_file_takes_its_directory_owner() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let me = std::fs::metadata(&state).unwrap().uid();
    let (uid, gid) = if me == 0 {
        (65534, 65534)
    } else {
        (me, std::fs::metadata(&state).unwrap().gid())
    };
    if me == 0 {
        std::os::unix::fs::chown(&state, Some(uid), Some(gid)).unwrap();
    }
    let path = state.join("keys.sqlite");
    let s = Store::open(&settings(&path)).unwrap();
    s.pin(&autoencrypt_milter::store::Pin {
        address: "a@example.org".into(),
        fingerprint: suite::fp('A'),
        created: 1,
        note: String::new(),
    })
    .await
    .unwrap();
    for p in [
        path.clone(),
        PathBuf::from(format!("{}-wal", path.display())),
        PathBuf::from(format!("{}-shm", path.display())),
    ] {
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{}", p.display());
    }
    // An existing file keeps its owner.
    drop(s);
    if me == 0 {
        std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
        Store::open(&settings(&path)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), 0);
    }
}

/// Two handles in one process (a reload's new engine beside the old one)
/// see each other's writes. (Opening must not open and close the existing
/// file itself: that drops every POSIX lock the process holds on it. The
/// reads of a second handle then failed with "disk I/O error" under the
/// in-process milter of tests/postfix_harvest.rs, which is the regression
/// test; this simpler sequence did not show it.)
#[tokio::test]
async fn a_second_handle_in_the_same_process_reads_what_the_first_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.sqlite");
    let first = Store::open(&settings(&path)).unwrap();
    for round in 0..5 {
        first
            .pin(&autoencrypt_milter::store::Pin {
                address: format!("a{round}@example.org"),
                fingerprint: "AB".repeat(20),
                created: 1,
                note: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let second = Store::open(&settings(&path)).unwrap();
        let pins = second
            .all_pins()
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(pins.len(), round + 1);
        drop(second);
        assert_eq!(first.all_pins().await.unwrap().len(), round + 1);
    }
}
