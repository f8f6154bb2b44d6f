//! Unit tests of the metrics: names, HELP and TYPE lines in both formats,
//! label combinations at zero, counting, and format negotiation.

use std::time::Duration;

use super::families::{
    CONNECTIONS_DROPPED, DIRECTIONS, ENCRYPTED, ENCRYPTION_DURATION, ENCRYPTION_ERRORS,
    KEY_LOOKUP_DURATION, KEY_LOOKUPS, MEMORY_BODIES, MESSAGE_SIZE, MESSAGES, direction_str,
};
use super::*;
use crate::keys::{FailReason, Lookup};
use crate::material::{Method, SourceKind};
use crate::policy::Direction;

fn sample(text: &str, name_and_labels: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .map(str::to_owned)
}

#[test]
fn exposed_names_are_the_registered_names_plus_suffix() {
    assert_eq!(format!("{MESSAGES}_total"), MESSAGES_TOTAL);
    assert_eq!(format!("{ENCRYPTED}_total"), ENCRYPTED_TOTAL);
    assert_eq!(format!("{KEY_LOOKUPS}_total"), KEY_LOOKUPS_TOTAL);
    assert_eq!(
        format!("{KEY_LOOKUP_DURATION}_seconds"),
        KEY_LOOKUP_DURATION_SECONDS
    );
    assert_eq!(
        format!("{ENCRYPTION_DURATION}_seconds"),
        ENCRYPTION_DURATION_SECONDS
    );
    assert_eq!(
        format!("{ENCRYPTION_ERRORS}_total"),
        ENCRYPTION_ERRORS_TOTAL
    );
    assert_eq!(format!("{MESSAGE_SIZE}_bytes"), MESSAGE_SIZE_BYTES);
    assert_eq!(format!("{MEMORY_BODIES}_bytes"), MEMORY_BODIES_BYTES);
    assert_eq!(
        format!("{CONNECTIONS_DROPPED}_total"),
        CONNECTIONS_DROPPED_TOTAL
    );
}

#[test]
fn every_metric_has_help_and_type_in_openmetrics() {
    let text = Metrics::new().render();
    for (family, kind) in [
        (MESSAGES, "counter"),
        (ENCRYPTED, "counter"),
        (KEY_LOOKUPS, "counter"),
        (KEY_LOOKUP_DURATION_SECONDS, "histogram"),
        (ENCRYPTION_DURATION_SECONDS, "histogram"),
        (MESSAGE_SIZE_BYTES, "histogram"),
        (CONNECTIONS_ACTIVE, "gauge"),
        (MEMORY_BODIES_BYTES, "gauge"),
        (CONNECTIONS_UNNEGOTIATED, "gauge"),
        (CONNECTIONS_LIMIT, "gauge"),
        (CONNECTIONS_DROPPED, "counter"),
        (ENCRYPTION_ERRORS, "counter"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {family} ")) && l.len() > 30),
            "no HELP for {family}:\n{text}"
        );
        assert!(
            text.lines().any(|l| l == format!("# TYPE {family} {kind}")),
            "no TYPE for {family}:\n{text}"
        );
    }
    assert!(text.contains("# UNIT autoencrypt_key_lookup_duration_seconds seconds\n"));
    assert!(text.contains("# UNIT autoencrypt_message_size_bytes bytes\n"));
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn every_metric_has_help_and_type_in_prometheus_text() {
    let m = Metrics::new();
    let text = m.render_as(Format::PrometheusText);
    for (name, kind) in [
        (MESSAGES_TOTAL, "counter"),
        (ENCRYPTED_TOTAL, "counter"),
        (KEY_LOOKUPS_TOTAL, "counter"),
        (KEY_LOOKUP_DURATION_SECONDS, "histogram"),
        (ENCRYPTION_DURATION_SECONDS, "histogram"),
        (MESSAGE_SIZE_BYTES, "histogram"),
        (CONNECTIONS_ACTIVE, "gauge"),
        (MEMORY_BODIES_BYTES, "gauge"),
        (CONNECTIONS_UNNEGOTIATED, "gauge"),
        (CONNECTIONS_LIMIT, "gauge"),
        (CONNECTIONS_DROPPED_TOTAL, "counter"),
        (ENCRYPTION_ERRORS_TOTAL, "counter"),
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}:\n{text}"
        );
    }
    assert!(!text.contains("# EOF"));
    assert!(!text.contains("# UNIT"));
    // Samples are the same lines in both formats.
    let om = m.render();
    let samples = |t: &str| -> Vec<String> {
        let mut v: Vec<String> = t
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    assert_eq!(samples(&text), samples(&om));
}

#[test]
fn all_label_combinations_exist_at_zero() {
    let text = Metrics::new().render();
    for d in ["inbound", "outbound"] {
        for o in [
            "encrypted",
            "passed",
            "rejected",
            "tempfailed",
            "already_encrypted",
        ] {
            let s = format!("{MESSAGES_TOTAL}{{direction=\"{d}\",outcome=\"{o}\"}}");
            assert_eq!(sample(&text, &s).as_deref(), Some("0"), "{s}:\n{text}");
        }
    }
    for m in ["smime", "openpgp"] {
        let s = format!("{ENCRYPTED_TOTAL}{{method=\"{m}\"}}");
        assert_eq!(sample(&text, &s).as_deref(), Some("0"), "{s}");
        let s = format!("{ENCRYPTION_DURATION_SECONDS}_count{{method=\"{m}\"}}");
        assert_eq!(sample(&text, &s).as_deref(), Some("0"), "{s}");
    }
    for r in ["smimea", "openpgpkey"] {
        for res in [
            "found",
            "not_found",
            "insecure",
            "bogus",
            "failed",
            "cache_hit",
        ] {
            for src in ["directory", "dane"] {
                let s = format!(
                    "{KEY_LOOKUPS_TOTAL}{{source=\"{src}\",record=\"{r}\",result=\"{res}\"}}"
                );
                assert_eq!(sample(&text, &s).as_deref(), Some("0"), "{s}");
            }
        }
        for src in ["directory", "dane"] {
            let s =
                format!("{KEY_LOOKUP_DURATION_SECONDS}_count{{source=\"{src}\",record=\"{r}\"}}");
            assert_eq!(sample(&text, &s).as_deref(), Some("0"), "{s}");
        }
    }
    assert_eq!(sample(&text, CONNECTIONS_ACTIVE).as_deref(), Some("0"));
    assert_eq!(sample(&text, MEMORY_BODIES_BYTES).as_deref(), Some("0"));
    for r in ["limit", "evicted", "negotiation_timeout"] {
        let s = format!("{CONNECTIONS_DROPPED_TOTAL}{{reason=\"{r}\"}}");
        assert_eq!(sample(&text, &s).as_deref(), Some("0"), "{s}");
    }
    assert_eq!(
        sample(&text, &format!("{MESSAGE_SIZE_BYTES}_count")).as_deref(),
        Some("0")
    );
}

#[test]
fn events_are_counted_under_their_labels() {
    let m = Metrics::new();
    m.message(Direction::Outbound, Outcome::AlreadyEncrypted);
    m.message(Direction::Inbound, Outcome::Tempfailed);
    m.message(Direction::Inbound, Outcome::Tempfailed);
    m.encrypted(Method::OpenPgp);
    m.lookup(
        SourceKind::Dane,
        Method::Smime,
        &Lookup::NotFound,
        Duration::from_millis(3),
    );
    m.lookup(
        SourceKind::Dane,
        Method::OpenPgp,
        &Lookup::Failed(FailReason::Timeout),
        Duration::from_secs(3),
    );
    m.lookup(
        SourceKind::Dane,
        Method::OpenPgp,
        &Lookup::Bogus("x".into()),
        Duration::from_millis(20),
    );
    m.cache_hit(SourceKind::Dane, Method::OpenPgp);
    m.encryption(Method::Smime, Duration::from_micros(700));
    m.encryption_error(Method::OpenPgp);
    m.message_size(10_000);
    m.message_size(50 * 1024 * 1024);
    let t = m.clone().render();
    let get = |s: &str| sample(&t, s).unwrap_or_else(|| format!("missing {s}"));

    assert_eq!(
        get("autoencrypt_messages_total{direction=\"outbound\",outcome=\"already_encrypted\"}"),
        "1"
    );
    assert_eq!(
        get("autoencrypt_messages_total{direction=\"inbound\",outcome=\"tempfailed\"}"),
        "2"
    );
    assert_eq!(get("autoencrypt_encrypted_total{method=\"openpgp\"}"), "1");
    assert_eq!(get("autoencrypt_encrypted_total{method=\"smime\"}"), "0");
    assert_eq!(
        get("autoencrypt_encryption_errors_total{method=\"openpgp\"}"),
        "1"
    );
    assert_eq!(
        get("autoencrypt_encryption_errors_total{method=\"smime\"}"),
        "0"
    );
    assert_eq!(
        get(
            "autoencrypt_key_lookups_total{source=\"dane\",record=\"smimea\",result=\"not_found\"}"
        ),
        "1"
    );
    assert_eq!(
        get(
            "autoencrypt_key_lookups_total{source=\"dane\",record=\"openpgpkey\",result=\"failed\"}"
        ),
        "1"
    );
    assert_eq!(
        get(
            "autoencrypt_key_lookups_total{source=\"dane\",record=\"openpgpkey\",result=\"bogus\"}"
        ),
        "1"
    );
    assert_eq!(
        get(
            "autoencrypt_key_lookups_total{source=\"dane\",record=\"openpgpkey\",result=\"cache_hit\"}"
        ),
        "1"
    );
    // The cache hit is counted but not timed.
    assert_eq!(
        get("autoencrypt_key_lookup_duration_seconds_count{source=\"dane\",record=\"openpgpkey\"}"),
        "2"
    );
    assert_eq!(
        get(
            "autoencrypt_key_lookup_duration_seconds_bucket{le=\"0.005\",source=\"dane\",record=\"smimea\"}"
        ),
        "1"
    );
    assert_eq!(
        get(
            "autoencrypt_key_lookup_duration_seconds_bucket{le=\"0.0025\",source=\"dane\",record=\"smimea\"}"
        ),
        "0"
    );
    assert_eq!(
        get("autoencrypt_encryption_duration_seconds_bucket{le=\"0.001\",method=\"smime\"}"),
        "1"
    );
    assert_eq!(get("autoencrypt_message_size_bytes_count"), "2");
    assert_eq!(
        get("autoencrypt_message_size_bytes_bucket{le=\"16384.0\"}"),
        "1"
    );
    assert_eq!(
        get("autoencrypt_message_size_bytes_bucket{le=\"67108864.0\"}"),
        "2"
    );
}

#[test]
fn lookup_results_match_lookup_kind() {
    for l in [
        Lookup::Found {
            keys: Vec::new(),
            unusable: Vec::new(),
            security: crate::keys::Security::Secure,
        },
        Lookup::NotFound,
        Lookup::Insecure,
        Lookup::Bogus(String::new()),
        Lookup::Failed(FailReason::ServFail),
    ] {
        assert_eq!(LookupResult::from(&l).as_str(), l.kind());
    }
}

#[test]
fn label_values_match_the_project_names() {
    let text = Metrics::new().render();
    for m in Method::ALL {
        assert!(text.contains(&format!("{{method=\"{m}\"}}")), "{m}");
    }
    for d in DIRECTIONS {
        assert_eq!(direction_str(d), d.to_string());
    }
}

#[test]
fn connection_guard_counts_while_alive() {
    let m = Metrics::new();
    let a = m.connection_opened();
    let b = m.clone().connection_opened();
    assert_eq!(m.connections_active(), 2);
    assert_eq!(
        sample(&m.render(), CONNECTIONS_ACTIVE).as_deref(),
        Some("2")
    );
    drop(a);
    assert_eq!(m.connections_active(), 1);
    drop(b);
    assert_eq!(m.connections_active(), 0);
    assert_eq!(
        sample(&m.render(), CONNECTIONS_ACTIVE).as_deref(),
        Some("0")
    );
}

#[test]
fn negotiation_prefers_openmetrics_only_when_asked() {
    // Prometheus 2.42's scrape Accept header.
    let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
    assert_eq!(
        Format::negotiate(Some("application/openmetrics-text; version=1.0.0")),
        Format::OpenMetrics
    );
    assert_eq!(Format::negotiate(None), Format::PrometheusText);
    assert_eq!(Format::negotiate(Some("*/*")), Format::PrometheusText);
    assert_eq!(
        Format::negotiate(Some("application/openmetrics-text;q=0.2, text/plain")),
        Format::PrometheusText
    );
    assert_eq!(
        Format::negotiate(Some("application/openmetrics-text;q=0")),
        Format::PrometheusText
    );
}

/// The signing families: exposed names, HELP and TYPE, every series at
/// zero, and each event under its labels.
#[test]
fn signing_and_verification_are_counted_under_their_labels() {
    use super::signing_families::{FORGED_RESULTS_REMOVED, SIGNED, UNSIGNED, VERIFIED};
    use crate::policy::Unsigned;
    assert_eq!(format!("{SIGNED}_total"), SIGNED_TOTAL);
    assert_eq!(format!("{UNSIGNED}_total"), UNSIGNED_TOTAL);
    assert_eq!(format!("{VERIFIED}_total"), VERIFIED_TOTAL);
    assert_eq!(
        format!("{FORGED_RESULTS_REMOVED}_total"),
        FORGED_RESULTS_REMOVED_TOTAL
    );
    let m = Metrics::new();
    let text = m.render_as(Format::PrometheusText);
    for name in [
        SIGNED_TOTAL,
        UNSIGNED_TOTAL,
        VERIFIED_TOTAL,
        FORGED_RESULTS_REMOVED_TOTAL,
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        assert!(text.contains(&format!("# TYPE {name} counter\n")), "{name}");
    }
    for method in Method::ALL {
        let s = format!("{SIGNED_TOTAL}{{method=\"{method}\"}}");
        assert_eq!(sample(&text, &s).as_deref(), Some("0"), "{s}");
        for result in VERIFY_RESULTS {
            let s = format!("{VERIFIED_TOTAL}{{method=\"{method}\",result=\"{result}\"}}");
            assert_eq!(sample(&text, &s).as_deref(), Some("0"), "{s}");
        }
    }
    for reason in Unsigned::ALL {
        let s = format!("{UNSIGNED_TOTAL}{{reason=\"{}\"}}", reason.as_str());
        assert_eq!(sample(&text, &s).as_deref(), Some("0"), "{s}");
    }
    m.signed(Method::OpenPgp);
    m.unsigned(Unsigned::LoginNotAllowed);
    m.verified(Method::Smime, "policy");
    m.forged_results_removed(2);
    let text = m.render_as(Format::PrometheusText);
    for (s, v) in [
        (format!("{SIGNED_TOTAL}{{method=\"openpgp\"}}"), "1"),
        (format!("{SIGNED_TOTAL}{{method=\"smime\"}}"), "0"),
        (
            format!("{UNSIGNED_TOTAL}{{reason=\"login_not_allowed\"}}"),
            "1",
        ),
        (
            format!("{VERIFIED_TOTAL}{{method=\"smime\",result=\"policy\"}}"),
            "1",
        ),
        (FORGED_RESULTS_REMOVED_TOTAL.to_owned(), "2"),
    ] {
        assert_eq!(sample(&text, &s).as_deref(), Some(v), "{s}");
    }
}
