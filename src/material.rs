//! The vocabulary shared by key sources, the policy and the backends:
//! encryption methods, S/MIME ciphers, key material as found, and why a
//! key is refused. Neutral ground, so that `keys` needs nothing from
//! `backend` (and the reverse) for types alone.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// An encryption method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// S/MIME: CMS `application/pkcs7-mime` (RFC 8551).
    Smime,
    /// OpenPGP: PGP/MIME (RFC 3156).
    OpenPgp,
}

impl Method {
    /// Every method, in the default preference order.
    pub const ALL: [Method; 2] = [Method::Smime, Method::OpenPgp];

    /// The name used in configuration, policy files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Smime => "smime",
            Method::OpenPgp => "openpgp",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A method name that is not one of [`Method::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown encryption method {0:?} (expected \"smime\" or \"openpgp\")")]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "smime" => Ok(Method::Smime),
            "openpgp" => Ok(Method::OpenPgp),
            other => Err(UnknownMethod(other.to_owned())),
        }
    }
}

/// The symmetric cipher of an S/MIME message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SmimeCipher {
    /// EnvelopedData, AES-128-CBC.
    Aes128Cbc,
    /// EnvelopedData, AES-256-CBC: what every S/MIME client reads.
    #[default]
    Aes256Cbc,
    /// AuthEnvelopedData (RFC 5083/5084), AES-256-GCM.
    Aes256Gcm,
}

impl SmimeCipher {
    /// The name used in configuration (`smime.cipher`).
    pub fn as_str(self) -> &'static str {
        match self {
            SmimeCipher::Aes128Cbc => "aes-128-cbc",
            SmimeCipher::Aes256Cbc => "aes-256-cbc",
            SmimeCipher::Aes256Gcm => "aes-256-gcm",
        }
    }
}

impl fmt::Display for SmimeCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cipher name that is not supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown S/MIME cipher {0:?} (expected aes-128-cbc, aes-256-cbc or aes-256-gcm)")]
pub struct UnknownCipher(pub String);

impl FromStr for SmimeCipher {
    type Err = UnknownCipher;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aes-128-cbc" => Ok(SmimeCipher::Aes128Cbc),
            "aes-256-cbc" => Ok(SmimeCipher::Aes256Cbc),
            "aes-256-gcm" => Ok(SmimeCipher::Aes256Gcm),
            other => Err(UnknownCipher(other.to_owned())),
        }
    }
}

/// Key bytes as a key source found them, not yet checked.
#[derive(Clone, Debug)]
pub struct KeyMaterial {
    /// Which backend reads these bytes.
    pub method: Method,
    /// S/MIME: an X.509 certificate, DER or PEM. OpenPGP: a transferable
    /// public key, binary or ASCII-armored.
    pub data: Vec<u8>,
    /// Where exactly it came from, for logs and reasons ("file /x/a.pem",
    /// "SMIMEA 3 0 0 at `owner-name`").
    pub origin: String,
    /// Which source found it, what vouched for it, when it was fetched.
    pub provenance: Provenance,
    /// Other addresses the source says are the looked-up address's own
    /// (the other mail addresses of the LDAP entry the key is in): a key
    /// naming one of them is used for the looked-up address, on the
    /// source's word. Empty for every other source.
    pub bound_addresses: Vec<crate::address::Address>,
}

impl KeyMaterial {
    /// A refusal of this key.
    pub fn reject(&self, reason: RejectReason) -> KeyRejected {
        KeyRejected {
            origin: self.origin.clone(),
            reason,
        }
    }

    /// Refuses material meant for another backend.
    pub(crate) fn expect_method(&self, method: Method) -> Result<(), KeyRejected> {
        if self.method == method {
            Ok(())
        } else {
            Err(self.reject(RejectReason::WrongMethod(self.method)))
        }
    }
}

/// Why a key may not be used. The reason is shown to administrators
/// (logs, `lookup`, `encrypt`), never to the SMTP client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct KeyRejected {
    /// Where the key came from.
    pub origin: String,
    /// What is wrong with it.
    pub reason: RejectReason,
}

/// What is wrong with a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// The bytes are not a certificate or key of the method's kind.
    #[error("unreadable key: {0}")]
    Unreadable(String),
    /// Key material for another method was handed to this backend.
    #[error("key is for {0}, not for this method")]
    WrongMethod(Method),
    /// Past its notAfter or expiration time.
    #[error("expired ({0})")]
    Expired(String),
    /// Before its notBefore time.
    #[error("not yet valid (from {0})")]
    NotYetValid(String),
    /// The key's source vouches for it less than the rule accepts.
    #[error("trust {trust} is below the rule's min_trust {min}")]
    BelowMinTrust {
        /// What the key's source vouches.
        trust: TrustLevel,
        /// The rule's `min_trust`.
        min: TrustLevel,
    },
    /// The rule pins fingerprints, and this key has none of them.
    #[error("fingerprint {0} is not one the rule pins")]
    NotPinned(String),
    /// S/MIME: keyUsage lacks keyEncipherment (RSA) or keyAgreement (EC).
    #[error("key usage does not allow encryption (needs {0})")]
    KeyUsage(&'static str),
    /// S/MIME: extendedKeyUsage present without emailProtection.
    #[error("extended key usage lacks emailProtection")]
    ExtendedKeyUsage,
    /// S/MIME: a public key algorithm that cannot receive CMS mail.
    #[error("unsupported public key algorithm {0}")]
    Algorithm(String),
    /// The certificate or key does not name the address.
    #[error("not issued for {0}")]
    AddressMismatch(String),
    /// OpenPGP: the certificate is revoked.
    #[error("revoked")]
    Revoked,
    /// OpenPGP: no live, unrevoked, policy-conformant encryption subkey.
    #[error("no usable encryption-capable (sub)key")]
    NoEncryptionKey,
    /// OpenPGP: the standard policy rejects the certificate.
    #[error("rejected by policy: {0}")]
    Policy(String),
    /// A DNS record that cannot give an encryption key by itself (SMIMEA
    /// with only a hash, or a CA usage).
    #[error("record present, no usable certificate: {0}")]
    UnusableRecord(String),
    /// SMIMEA usage 1 (PKIX-EE): the certificate does not verify against
    /// the system trust store.
    #[error("PKIX-EE certificate does not chain to a trusted CA: {0}")]
    Untrusted(String),
}

/// How far a found key is vouched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Security {
    /// DNSSEC validated the answer.
    Secure,
    /// The administrator put the key there (local key directory).
    Local,
    /// From an unsigned zone, used only because `dns.allow_insecure` is on.
    Insecure,
    /// Fetched over HTTPS from a server whose certificate the web PKI
    /// (the system roots, or `wkd.ca_file`) vouches for: WKD, keyserver.
    WebPki,
    /// Read from the operator's LDAP directory (`[[ldap]]`).
    Directory,
    /// Learned from the sender's own authenticated mail (an S/MIME
    /// signature or an Autocrypt header whose message passed DKIM or
    /// DMARC), or imported with `keys import`.
    Learned,
}

impl Security {
    /// Who vouched for the key, in words (logs, `policy explain`).
    pub fn vouched_by(self) -> &'static str {
        match self {
            Security::Secure => "DNSSEC",
            Security::Local => "the operator",
            Security::Insecure => "nobody (unsigned zone, dns.allow_insecure)",
            Security::WebPki => "the web PKI (TLS)",
            Security::Directory => "the operator's LDAP directory",
            Security::Learned => "the sender's authenticated mail (learned)",
        }
    }
}

/// Which kind of source found a key. The names are the metric label
/// (`source`) and the ones DESIGN.md reserves for the policy's `sources`
/// key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// `keys.directory`: files the operator put there.
    Directory,
    /// SMIMEA / OPENPGPKEY records in DNS (DANE for mail).
    Dane,
    /// An LDAP directory or Active Directory (`[[ldap]]`).
    Ldap,
    /// The recipient domain's Web Key Directory (`[wkd]`).
    Wkd,
    /// Verifying keyservers searched by address (`[keyserver] urls`).
    Keyserver,
    /// Keys learned from authenticated inbound mail, in the key store.
    Learned,
    /// The in-memory source of the unit tests. Part of every build (the
    /// type is public), but no running milter has such a source and no
    /// metric series is made for it in advance.
    Test,
}

impl SourceKind {
    /// The name in policy files, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Directory => "directory",
            SourceKind::Dane => "dane",
            SourceKind::Ldap => "ldap",
            SourceKind::Wkd => "wkd",
            SourceKind::Keyserver => "keyserver",
            SourceKind::Learned => "learned",
            SourceKind::Test => "test",
        }
    }
}

impl SourceKind {
    /// The sources a rule may name in `sources` (the ones built).
    pub const CHOOSABLE: [SourceKind; 6] = [
        SourceKind::Directory,
        SourceKind::Ldap,
        SourceKind::Dane,
        SourceKind::Wkd,
        SourceKind::Keyserver,
        SourceKind::Learned,
    ];

    /// How far this kind of source vouches for what it finds by default:
    /// the operator's directories (files, LDAP) are the operator's word
    /// (an `[[ldap]]` directory may say less: its `trust`); DANE records are
    /// vouched for by DNSSEC (an unsigned zone's keys exist only under
    /// `dns.allow_insecure`, where the operator accepts them as such); WKD
    /// and keyservers by the web PKI alone; learned keys by nobody but the
    /// sender's own authenticated mail.
    pub fn trust(self) -> TrustLevel {
        match self {
            SourceKind::Directory | SourceKind::Ldap | SourceKind::Test => TrustLevel::Operator,
            SourceKind::Dane => TrustLevel::Dnssec,
            SourceKind::Wkd | SourceKind::Keyserver => TrustLevel::Tls,
            SourceKind::Learned => TrustLevel::Learned,
        }
    }

    /// Whether this kind of source can hold keys for `method` (WKD and
    /// keyservers hold OpenPGP keys only).
    pub fn serves(self, method: Method) -> bool {
        match self {
            SourceKind::Wkd | SourceKind::Keyserver => method == Method::OpenPgp,
            SourceKind::Directory
            | SourceKind::Ldap
            | SourceKind::Dane
            | SourceKind::Learned
            | SourceKind::Test => true,
        }
    }

    /// The sources whose failure an opportunistic rule tolerates unless
    /// it says otherwise (`tolerate_failures`): those that can only
    /// upgrade mail (the web sources, trust `tls`), so that a slow web
    /// server does not defer all mail to its domain. Not the key store
    /// (`learned`): it is the operator's own, and its failure must not turn
    /// mail to a sender whose key it holds into plaintext — such mail
    /// follows `on_lookup_error`.
    pub fn tolerated_by_default() -> Vec<SourceKind> {
        Self::CHOOSABLE
            .into_iter()
            .filter(|k| k.trust() == TrustLevel::Tls)
            .collect()
    }

    /// `kinds` in their order, each once: several `[[ldap]]` directories
    /// are one kind (one `sources` name, one chain of lookups).
    pub fn distinct(kinds: impl IntoIterator<Item = SourceKind>) -> Vec<SourceKind> {
        let mut out: Vec<SourceKind> = Vec::new();
        for k in kinds {
            if !out.contains(&k) {
                out.push(k);
            }
        }
        out
    }

    /// `sources` each with its trust (`directory [operator]`), joined by
    /// `sep`: how `check-config` and policy errors name sources.
    pub fn list_with_trust(sources: &[Planned], sep: &str) -> String {
        let named: Vec<String> = sources
            .iter()
            .map(|p| format!("{} [{}]", p.kind, p.trust))
            .collect();
        named.join(sep)
    }
}

/// A configured source as the policy plans with it: its kind and the
/// most it vouches for (an `[[ldap]]` directory's own `trust`, else the
/// kind's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    /// The kind of source.
    pub kind: SourceKind,
    /// The most it vouches for.
    pub trust: TrustLevel,
}

impl From<SourceKind> for Planned {
    fn from(kind: SourceKind) -> Self {
        Planned {
            kind,
            trust: kind.trust(),
        }
    }
}

/// A source name in a policy file that is not one of
/// [`SourceKind::CHOOSABLE`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownSource {
    /// Not a source name at all.
    #[error(
        "unknown source {0:?} (expected \"directory\", \"ldap\", \"dane\", \"wkd\", \"keyserver\" \
         or \"learned\")"
    )]
    Unknown(String),
}

impl FromStr for SourceKind {
    type Err = UnknownSource;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "directory" => Ok(SourceKind::Directory),
            "dane" => Ok(SourceKind::Dane),
            "wkd" => Ok(SourceKind::Wkd),
            "keyserver" => Ok(SourceKind::Keyserver),
            "ldap" => Ok(SourceKind::Ldap),
            "learned" => Ok(SourceKind::Learned),
            other => Err(UnknownSource::Unknown(other.to_owned())),
        }
    }
}

/// How far a key can be trusted, by what vouched for it; ordered, the
/// lowest first. A rule's `min_trust` is the lowest it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrustLevel {
    /// Learned from mail (signatures, Autocrypt headers of authenticated
    /// inbound mail): the `learned` source.
    Learned,
    /// Authenticated by the web PKI only (WKD, keyservers).
    Tls,
    /// Vouched for by the DNSSEC chain (SMIMEA, OPENPGPKEY).
    Dnssec,
    /// The operator's own systems (the key directory).
    Operator,
}

impl TrustLevel {
    /// Every level, lowest first.
    pub const ALL: [TrustLevel; 4] = [
        TrustLevel::Learned,
        TrustLevel::Tls,
        TrustLevel::Dnssec,
        TrustLevel::Operator,
    ];

    /// The name in policy files (`min_trust`), logs and `policy explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrustLevel::Learned => "learned",
            TrustLevel::Tls => "tls",
            TrustLevel::Dnssec => "dnssec",
            TrustLevel::Operator => "operator",
        }
    }
}

impl fmt::Display for TrustLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `min_trust` value that is not a trust level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown trust level {0:?} (expected \"operator\", \"dnssec\", \"tls\" or \"learned\")")]
pub struct UnknownTrust(pub String);

impl FromStr for TrustLevel {
    type Err = UnknownTrust;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TrustLevel::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTrust(s.to_owned()))
    }
}

/// Which key sources a lookup may ask and the lowest trust it accepts:
/// what a rule's `sources` and `min_trust` say, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChoice {
    /// The sources to ask, in the rule's order; `None` = every configured
    /// source. Asked highest trust first either way (the rule's order
    /// decides among sources of one level), so a lower source never
    /// decides before a higher one.
    pub sources: Option<Vec<SourceKind>>,
    /// Keys vouched for below this are refused; sources that cannot reach
    /// it are not asked.
    pub min_trust: TrustLevel,
    /// Sources whose failure (timeout, bogus answer, server error) does
    /// not decide: it is counted and noted, and the next source is asked.
    /// Any other source's failure is the answer.
    pub tolerate: Vec<SourceKind>,
    /// Fingerprints fixed by the operator (`pin`, canonical upper-case
    /// hex): when any is set, only keys with one of them are used; a
    /// source whose keys are all others does not decide.
    pub pins: Vec<String>,
    /// `on_key_change`: what a key a source has not returned before for
    /// the address does.
    pub on_key_change: OnKeyChange,
}

/// A rule's `on_key_change`: what happens when a source returns a key it
/// has not returned before for the same address and method (it is logged
/// and counted either way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnKeyChange {
    /// Use the new key (the default).
    #[default]
    Accept,
    /// Keep using the keys used before while they are still valid, else
    /// defer, until an operator approves the new key (`keys approve`).
    Review,
}

impl OnKeyChange {
    /// The name in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            OnKeyChange::Accept => "accept",
            OnKeyChange::Review => "review",
        }
    }
}

impl KeyChoice {
    /// Every configured source, any trust, no failure tolerated (the
    /// `lookup` and `encrypt` commands).
    pub fn any() -> Self {
        KeyChoice {
            sources: None,
            min_trust: TrustLevel::Learned,
            tolerate: Vec::new(),
            pins: Vec::new(),
            on_key_change: OnKeyChange::Accept,
        }
    }

    /// `items` (the configured sources) as this choice asks them: the
    /// chosen ones that can reach `min_trust`, highest trust first, stable
    /// (the rule's order, else the configured order, within one level).
    pub fn order<'a, T>(
        &self,
        items: &'a [T],
        kind: impl Fn(&T) -> SourceKind,
        trust: impl Fn(&T) -> TrustLevel,
    ) -> Vec<&'a T> {
        let mut picked: Vec<&T> = match &self.sources {
            None => items.iter().collect(),
            Some(kinds) => kinds
                .iter()
                .flat_map(|k| items.iter().filter(|i| kind(i) == *k))
                .collect(),
        };
        picked.retain(|i| trust(i) >= self.min_trust);
        picked.sort_by_key(|i| std::cmp::Reverse(trust(i)));
        picked
    }

    /// What a failure of the sources in `asked` does, in words (for
    /// `check-config` and `policy explain`).
    pub fn failure_summary(&self, asked: &[SourceKind]) -> String {
        let kinds = SourceKind::distinct(asked.iter().copied());
        let tolerated: Vec<&str> = kinds
            .iter()
            .filter(|k| self.tolerate.contains(k))
            .map(|k| k.as_str())
            .collect();
        let deciding = kinds.len() - tolerated.len();
        match (tolerated.is_empty(), deciding) {
            (true, _) => "a failing source decides (lookup error)".to_owned(),
            (false, 0) => format!("failures tolerated: {}", tolerated.join(", ")),
            (false, _) => format!(
                "failures tolerated: {} (others decide: lookup error)",
                tolerated.join(", ")
            ),
        }
    }

    /// The kinds of `configured` this choice asks, in order.
    pub fn plan(&self, configured: &[Planned]) -> Vec<SourceKind> {
        self.plan_with_trust(configured)
            .into_iter()
            .map(|p| p.kind)
            .collect()
    }

    /// The sources of `configured` this choice asks, in order, with
    /// their trust.
    pub fn plan_with_trust(&self, configured: &[Planned]) -> Vec<Planned> {
        self.order(configured, |p| p.kind, |p| p.trust)
            .into_iter()
            .copied()
            .collect()
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a key came from and what vouched for it: carried by every key
/// from the source that found it to the log line that names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// The source that found it.
    pub source: SourceKind,
    /// What vouched for it.
    pub security: Security,
    /// How far it can be trusted: the source's trust (an `[[ldap]]`
    /// directory's `trust`, else its kind's).
    pub trust: TrustLevel,
    /// When the source fetched it (for a cached DNS answer: when the
    /// answer arrived, not when it was read from the cache).
    pub fetched: SystemTime,
}

impl Provenance {
    /// `source`'s word on a key fetched now.
    pub fn now(source: SourceKind, security: Security) -> Self {
        Provenance {
            source,
            security,
            trust: source.trust(),
            fetched: SystemTime::now(),
        }
    }

    /// How far the key can be trusted (from its source).
    pub fn trust(&self) -> TrustLevel {
        self.trust
    }

    /// How long ago the key was fetched, in whole seconds (0 when the
    /// clock went backwards).
    pub fn age(&self, now: SystemTime) -> Duration {
        let d = now.duration_since(self.fetched).unwrap_or_default();
        Duration::from_secs(d.as_secs())
    }
}

impl fmt::Display for Provenance {
    /// `source dane, vouched for by DNSSEC, fetched 12 s ago`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "source {}, vouched for by {}, fetched {} s ago",
            self.source,
            self.security.vouched_by(),
            self.age(SystemTime::now()).as_secs()
        )
    }
}

/// A fingerprint as a `pin` is written — hex, any case, with spaces or
/// colons between the digits — in its canonical form (upper-case hex):
/// 40 digits (an OpenPGP v4 fingerprint) or 64 (an OpenPGP v6
/// fingerprint, or the SHA-256 of an S/MIME certificate, as `lookup` and
/// the logs show it).
pub fn canonical_fingerprint(written: &str) -> Result<String, String> {
    let hex: String = written
        .chars()
        .filter(|c| !matches!(c, ' ' | ':'))
        .collect();
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) || !matches!(hex.len(), 40 | 64) {
        return Err(format!(
            "{written:?} is not a fingerprint (40 hex digits for OpenPGP v4, 64 for OpenPGP v6 \
             or the SHA-256 of an S/MIME certificate)"
        ));
    }
    Ok(hex.to_ascii_uppercase())
}
