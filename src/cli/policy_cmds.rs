//! `check-config` and `policy explain`: the administrator's view of the
//! configuration and the policy engine. I/O lives here; the decisions come
//! from the pure functions of [`crate::policy`].

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Subcommand, ValueEnum};

use crate::address::Address;
use crate::backend::{Method, Registry};
use crate::config::{Config, DnsConfig, DnsMode, FileRequirement, LoadedConfig};
use crate::keys::dns::resolv_conf_servers;
use crate::keys::{FailReason, KeyChoice, KeyService, Security, SourceKind};
use crate::policy::{
    Action, ConnectionFacts, Direction, KeyOutcome, MethodOutcome, Policy, Query,
    RecipientDecision, Treatment, decide,
};

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show which rule matches a recipient, the key lookup outcome, and
    /// the decision with the exact SMTP reply.
    Explain(ExplainArgs),
}

/// Arguments of `policy explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Recipient address.
    #[arg(long, value_name = "ADDR")]
    pub to: String,
    /// Envelope sender; `<>` or omitted for the null sender.
    #[arg(long, value_name = "ADDR")]
    pub from: Option<String>,
    /// Direction; by default inbound when the recipient's domain is in
    /// `local_domains`, else outbound.
    #[arg(long, value_enum)]
    pub direction: Option<DirectionArg>,
    /// Do not look keys up: show the decision for each possible outcome.
    #[arg(long)]
    pub no_lookup: bool,
    /// The MTA's `{daemon_name}` to assume.
    #[arg(long, value_name = "NAME")]
    pub daemon_name: Option<String>,
    /// Assume the sender authenticated (SMTP AUTH).
    #[arg(long)]
    pub authenticated: bool,
}

/// `--direction`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DirectionArg {
    /// Encryption at rest for local recipients.
    Inbound,
    /// Mail leaving for other domains.
    Outbound,
}

/// Where the resolvers come from when `dns.resolvers` is empty.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// In `trust-ad` mode, the resolvers in use (`dns.resolvers`, or those of
/// `/etc/resolv.conf`) whose answers reach us over a network; empty in
/// `validate` mode. `check-config` and `serve` warn about each.
pub(super) fn exposed_trust_ad_resolvers(dns: &DnsConfig) -> Vec<SocketAddr> {
    if dns.mode != DnsMode::TrustAd {
        return Vec::new();
    }
    if dns.resolvers.is_empty() {
        remote_resolvers(&resolv_conf_servers(Path::new(RESOLV_CONF)))
    } else {
        remote_resolvers(&dns.resolvers)
    }
}

/// The resolvers whose answers reach us over a network: in `trust-ad`
/// mode the milter believes their AD bit, which nothing protects in
/// transit (RFC 6840 §5.7 asks for a secure channel, in practice loopback).
fn remote_resolvers(servers: &[SocketAddr]) -> Vec<SocketAddr> {
    servers
        .iter()
        .filter(|s| !s.ip().to_canonical().is_loopback())
        .copied()
        .collect()
}

fn load(config: &Path) -> Result<(LoadedConfig, Policy, Option<String>), String> {
    let loaded =
        Config::load(config, FileRequirement::for_path(config)).map_err(|e| e.to_string())?;
    let (policy, note) = Policy::load(&loaded.config).map_err(|e| e.to_string())?;
    Ok((loaded, policy, note))
}

/// `check-config`: exit 0 when the configuration and every policy file
/// are valid, 1 with file and line otherwise.
pub fn check_config(config: &Path) -> ExitCode {
    let (loaded, policy, note) = match load(config) {
        Ok(x) => x,
        Err(e) => return super::fail(1, e),
    };
    let cfg = &loaded.config;
    // Set the key sources up as `serve` would: the trust anchor, the
    // resolvers and `wkd.ca_file` are read now, not at the first message.
    if let Err(e) = KeyService::from_config(cfg, Arc::new(Registry::new()), None) {
        return super::fail(1, e);
    }
    // The signing keys as a start would read them: a key others may read
    // stops it.
    let signing = match crate::milter::SigningSetup::load(&cfg.signing) {
        Ok(s) => s,
        Err(e) => return super::fail(1, e),
    };
    let mut warnings = Vec::new();
    if let Some(n) = note {
        warnings.push(n);
    }
    if signing.is_none()
        && let Some(r) = policy
            .rules()
            .iter()
            .find(|r| !r.signing.methods.is_empty())
    {
        warnings.push(format!(
            "rule {:?} ({}) asks to sign, but signing.key_dir is not set: nothing is signed{}",
            r.name,
            r.origin,
            if r.signing.required {
                ", and its sign_required refuses the mail"
            } else {
                ""
            }
        ));
    }
    if cfg.dns.allow_insecure {
        warnings.push(format!(
            "dns.allow_insecure = true ({}): keys from unsigned zones will be used, \
             so anyone who can spoof DNS can choose the key",
            origin(&loaded, "dns.allow_insecure")
        ));
    }
    if cfg.dns.mode == DnsMode::TrustAd {
        let from = if cfg.dns.resolvers.is_empty() {
            RESOLV_CONF.to_owned()
        } else {
            origin(&loaded, "dns.resolvers")
        };
        for server in exposed_trust_ad_resolvers(&cfg.dns) {
            warnings.push(format!(
                "dns.mode = \"trust-ad\" with resolver {server} ({from}), which is not on \
                 loopback: its AD bit crosses the network unprotected, so anyone on the path \
                 can forge it and choose the key; use a validating resolver on this host or \
                 dns.mode = \"validate\""
            ));
        }
    }
    if let Some(d) = &cfg.keys.directory
        && !d.is_dir()
    {
        warnings.push(format!("keys.directory {} is not a directory", d.display()));
    }
    for (i, d) in cfg.ldap.iter().enumerate() {
        use std::os::unix::fs::PermissionsExt as _;
        if let Some(f) = &d.bind_password_file
            && let Ok(meta) = std::fs::metadata(f)
            && meta.permissions().mode() & 0o004 != 0
        {
            warnings.push(format!(
                "ldap[{i}].bind_password_file {} is readable by every user (chmod o-r)",
                f.display()
            ));
        }
    }
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Some(f) = &cfg.store.password_file
            && let Ok(meta) = std::fs::metadata(f)
            && meta.permissions().mode() & 0o004 != 0
        {
            warnings.push(format!(
                "store.password_file {} is readable by every user (chmod o-r)",
                f.display()
            ));
        }
    }
    let configured = crate::keys::configured_sources(cfg);
    for r in policy.rules() {
        // Written out, but naming a configured source the rule does not
        // ask: no effect. (One not configured here may be elsewhere: an
        // example policy names the keyserver for sites that have one.)
        if let (
            Treatment::Encrypt {
                tolerate_failures: Some(listed),
                ..
            },
            Some(choice),
        ) = (&r.treatment, r.treatment.key_choice())
        {
            let asked = choice.plan(&configured);
            let idle: Vec<&str> = listed
                .iter()
                .filter(|k| configured.iter().any(|p| p.kind == **k) && !asked.contains(k))
                .map(|k| k.as_str())
                .collect();
            if !idle.is_empty() {
                warnings.push(format!(
                    "{}: rule {:?}: tolerate_failures names {}, which the rule does not ask \
                     (not in its sources, or below its min_trust): no effect",
                    r.origin,
                    r.name,
                    idle.join(", ")
                ));
            }
        }
    }
    for s in policy.shadowed() {
        let (r, by) = (&policy.rules()[s.rule], &policy.rules()[s.by]);
        warnings.push(format!(
            "{}: rule {:?} can never match: rule {:?} ({}) comes first and matches everything it matches",
            r.origin, r.name, by.name, by.origin
        ));
    }
    for w in &warnings {
        eprintln!("autoencrypt-milter: warning: {w}");
    }

    match &loaded.file {
        Some(f) => println!("# effective configuration (file {})", f.display()),
        None => println!(
            "# effective configuration (no file {}: built-in defaults)",
            config.display()
        ),
    }
    let lines = cfg.to_lines();
    let width = lines
        .iter()
        .map(|(k, v)| k.len() + v.len() + 3)
        .max()
        .unwrap_or(0);
    for (k, v) in &lines {
        let kv = format!("{k} = {v}");
        println!("{kv:<width$}  # {}", origin(&loaded, k));
    }
    for (i, d) in cfg.ldap.iter().enumerate() {
        println!("{}", ldap_line(i, d));
    }
    println!(
        "store = {} (refreshed every {} s); harvest: {}",
        cfg.store.url_in_force(),
        cfg.store.refresh_secs,
        match (cfg.harvest.enabled, cfg.authserv_id.as_str()) {
            (false, _) => "off".to_owned(),
            (true, "") => "off (no authserv_id)".to_owned(),
            (true, id) => format!("on, trusting Authentication-Results under {id}"),
        }
    );
    println!();
    println!(
        "# rules, first match wins (policy_dir {})",
        cfg.policy_dir.display()
    );
    let all = policy
        .rules()
        .iter()
        .chain(std::iter::once(policy.default_rule()));
    for (i, r) in all.enumerate() {
        println!("{}. {:?} ({})", i + 1, r.name, r.origin);
        println!("   when: {}", r.conditions_summary());
        println!("   then: {}", r.treatment_summary());
        if !r.signing.methods.is_empty() {
            println!("   sign: {}", r.signing_summary());
        }
        if let Some(choice) = r.treatment.key_choice() {
            // What it asks here, in the order asked, with this configuration.
            let plan = choice.plan_with_trust(&configured);
            let kinds: Vec<SourceKind> = plan.iter().map(|p| p.kind).collect();
            println!(
                "   keys: {}; accepts trust {} and above; {}",
                SourceKind::list_with_trust(&plan, ", then "),
                choice.min_trust,
                choice.failure_summary(&kinds)
            );
        }
    }
    println!();
    println!(
        "configuration OK ({} rule(s), {} warning(s))",
        policy.rules().len(),
        warnings.len()
    );
    ExitCode::SUCCESS
}

fn origin(loaded: &LoadedConfig, key: &str) -> String {
    loaded
        .origins
        .get(key)
        .map_or_else(|| "built-in default".to_owned(), ToString::to_string)
}

/// `policy ...`.
pub fn run(config: &Path, cmd: &PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Explain(args) => explain(config, args),
    }
}

fn explain(config: &Path, args: &ExplainArgs) -> ExitCode {
    let (loaded, policy, note) = match load(config) {
        Ok(x) => x,
        Err(e) => return super::fail(1, e),
    };
    if let Some(n) = note {
        eprintln!("autoencrypt-milter: warning: {n}");
    }
    let to = match Address::parse(&args.to) {
        Ok(a) => a,
        Err(e) => return super::fail(1, format!("--to: {e}")),
    };
    let from = match args.from.as_deref().map(str::trim) {
        None | Some("<>" | "") => None,
        Some(s) => match Address::parse(s) {
            Ok(a) => Some(a),
            Err(e) => return super::fail(1, format!("--from: {e}")),
        },
    };
    let (direction, how) = match args.direction {
        Some(DirectionArg::Inbound) => (Direction::Inbound, "given"),
        Some(DirectionArg::Outbound) => (Direction::Outbound, "given"),
        None => (policy.direction_of(&to), "from local_domains"),
    };
    let conn = ConnectionFacts {
        daemon_name: args.daemon_name.clone(),
        authenticated: args.authenticated,
    };
    let q = Query {
        recipient: &to,
        sender: from.as_ref(),
        direction,
        conn: &conn,
    };

    // Both spellings when they differ: the canonical one is what rules
    // and key sources see.
    println!("recipient: {}", to.both_forms());
    if to.routes_in_local_part() {
        let r = crate::policy::Reply::routed_address();
        println!(
            "refused at RCPT: {} {} {} (the MTA would route it elsewhere)",
            r.code(),
            r.enhanced(),
            r.text()
        );
    }
    println!(
        "sender:    {}",
        from.as_ref()
            .map_or_else(|| "<>".to_owned(), Address::both_forms)
    );
    println!("direction: {direction} ({how})");
    let m = policy.select(&q);
    for (r, why_not) in &m.skipped {
        println!("skipped rule {:?} ({}): {why_not}", r.name, r.origin);
    }
    println!("matched rule {:?} ({})", m.rule.name, m.rule.origin);
    for w in &m.why {
        println!("  {w}");
    }
    println!("  then: {}", m.rule.treatment_summary());
    println!("  sign: {}", m.rule.signing_summary());
    if !m.rule.signing.methods.is_empty() {
        println!("  {}", signing_keys_line(&loaded.config, from.as_ref()));
    }

    let methods = match &m.rule.treatment {
        Treatment::NeverEncrypt => Vec::new(),
        Treatment::Encrypt { methods, .. } => methods.clone(),
    };
    if methods.is_empty() {
        let d: RecipientDecision<()> =
            decide(m.rule, &to, direction, Vec::new(), policy.settings());
        println!("key lookup: not needed");
        print_decision(&d);
        return ExitCode::SUCCESS;
    }

    if args.no_lookup {
        println!("key lookup: skipped (--no-lookup); the decision for each outcome:");
        let cases: [(&str, MakeOutcome); 4] = [
            ("a usable key for every method", || KeyOutcome::Found {
                security: Security::Secure,
                usable: vec![()],
                rejected: Vec::new(),
            }),
            ("no key for any method", || KeyOutcome::NotFound),
            ("every lookup times out", || {
                KeyOutcome::Failed(FailReason::Timeout)
            }),
            ("DNSSEC bogus for every method", || {
                KeyOutcome::Bogus("bogus".to_owned())
            }),
        ];
        for (label, make) in cases {
            let outcomes = methods
                .iter()
                .map(|&method| MethodOutcome::new(method, make()))
                .collect();
            let d = decide(m.rule, &to, direction, outcomes, policy.settings());
            println!("  if {label}: {}", action_line(&d));
        }
        return ExitCode::SUCCESS;
    }

    let keys = match KeyService::from_config(&loaded.config, Arc::new(Registry::new()), None) {
        Ok(k) => k,
        Err(e) => return super::fail(1, e),
    };
    let choice = m.rule.treatment.key_choice().unwrap_or_else(KeyChoice::any);
    println!("key lookup: {}", plan_line(&keys, &choice));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return super::fail(1, format!("starting the runtime: {e}")),
    };
    let mut outcomes = Vec::with_capacity(methods.len());
    for &method in &methods {
        let explained = runtime.block_on(keys.explain(&to, method, &choice));
        for step in &explained.steps {
            println!(
                "  {method}: {}: {}",
                step.source,
                step.answer.replace('_', " ")
            );
            for line in &step.asked {
                println!("    {line}");
            }
        }
        outcomes.push(explained.outcome);
    }
    let d = decide(m.rule, &to, direction, outcomes, policy.settings());
    for n in &d.notes {
        println!("  {n}");
    }
    if let Action::Encrypt { choices, .. } = &d.action {
        for (method, keys) in choices {
            for k in keys {
                println!(
                    "  {method} key {} ({}; {})",
                    k.fingerprint, k.origin, k.provenance
                );
            }
        }
    }
    print_decision(&d);
    ExitCode::SUCCESS
}

/// Whether the sender has signing keys (`signing.key_dir`), for explain.
fn signing_keys_line(config: &crate::config::Config, from: Option<&Address>) -> String {
    let Some(from) = from else {
        return "signing keys: no --from given (the From: address decides)".to_owned();
    };
    match crate::milter::SigningSetup::load(&config.signing) {
        Ok(None) => "signing keys: none (signing.key_dir is not set): not signed".to_owned(),
        Ok(Some(setup)) => {
            let methods: Vec<&str> = setup
                .keys
                .methods(from)
                .iter()
                .map(|m| m.as_str())
                .collect();
            if methods.is_empty() {
                format!("signing keys of {from}: none in signing.key_dir: not signed")
            } else {
                format!("signing keys of {from}: [{}]", methods.join(", "))
            }
        }
        Err(e) => format!("signing keys: cannot be loaded: {e}"),
    }
}

/// The sources a rule's lookup asks, in order, with the trust each can
/// vouch; what it accepts; and the configured sources it does not ask.
fn plan_line(keys: &KeyService, choice: &KeyChoice) -> String {
    let plan = keys.plan(choice);
    let asked: Vec<String> = plan
        .iter()
        .map(|s| format!("{} [{}]", s.describe(), s.trust()))
        .collect();
    let mut line = if asked.is_empty() {
        "no key source".to_owned()
    } else {
        asked.join(", then ")
    };
    line.push_str(&format!("; accepts trust {} and above", choice.min_trust));
    let kinds: Vec<SourceKind> = plan.iter().map(|s| s.kind()).collect();
    line.push_str(&format!("; {}", choice.failure_summary(&kinds)));
    let skipped: Vec<String> = keys
        .plan(&KeyChoice::any())
        .into_iter()
        .filter(|s| !plan.iter().any(|p| p.kind() == s.kind()))
        .map(|s| {
            let why = if s.trust() < choice.min_trust {
                "below min_trust"
            } else {
                "not in the rule's sources"
            };
            format!("{} [{}] ({why})", s.describe(), s.trust())
        })
        .collect();
    if !skipped.is_empty() {
        line.push_str(&format!("; not asked: {}", skipped.join(", ")));
    }
    line
}

/// Builds one hypothetical outcome for `explain --no-lookup`.
type MakeOutcome = fn() -> KeyOutcome<()>;

fn print_decision<K>(d: &RecipientDecision<K>) {
    println!("decision: {}", action_line(d));
}

fn action_line<K>(d: &RecipientDecision<K>) -> String {
    match &d.action {
        Action::Encrypt {
            choices,
            smime_cipher,
            protect_headers,
            ..
        } => {
            let (m, keys) = match choices.first() {
                Some((m, k)) => (*m, k.len()),
                None => return "encrypt".to_owned(),
            };
            let cipher = if m == Method::Smime {
                format!(" ({smime_cipher})")
            } else {
                String::new()
            };
            let also: Vec<&str> = choices.iter().skip(1).map(|(m, _)| m.as_str()).collect();
            let also = if also.is_empty() {
                String::new()
            } else {
                format!("; also possible: {}", also.join(", "))
            };
            let headers = if *protect_headers {
                "header protected (RFC 9788: Subject [...] outside, the original inside)"
            } else {
                "header not protected (the Subject stays readable)"
            };
            format!("encrypt with {m}{cipher} to {keys} key(s){also}; {headers}")
        }
        Action::Pass(reason) => format!("pass unencrypted: {reason}"),
        Action::Reject(r) => format!("reject: {r}"),
        Action::TempFail(r) => format!("tempfail: {r}"),
    }
}

/// One `[[ldap]]` directory on one line for `check-config`: where, for
/// which domains, how it binds (never the password), what it asks.
fn ldap_line(i: usize, d: &crate::config::LdapConfig) -> String {
    let bind = if !d.bind_dn.trim().is_empty() {
        format!("simple bind as {:?}", d.bind_dn)
    } else if d.sasl_external {
        "SASL EXTERNAL".to_owned()
    } else {
        "anonymous".to_owned()
    };
    format!(
        "ldap[{i}] = {}{} for [{}], trust {}, {bind}, base {:?} scope {}, filter {:?}, \
         addresses in [{}], S/MIME in [{}], OpenPGP in [{}]",
        d.url,
        if d.starttls { " (StartTLS)" } else { "" },
        d.domains.join(", "),
        d.trust,
        d.base,
        d.scope,
        d.filter,
        d.address_attributes.join(", "),
        d.smime_attributes.join(", "),
        d.openpgp_attributes.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::remote_resolvers;

    #[test]
    fn only_loopback_resolvers_are_local() {
        let parse = |s: &str| s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        let servers = [
            parse("127.0.0.1:53"),
            parse("127.8.9.10:5353"),
            parse("[::1]:53"),
            parse("[::ffff:127.0.0.1]:53"),
            parse("192.0.2.1:53"),
            parse("[2001:db8::1]:53"),
            parse("0.0.0.0:53"),
        ];
        assert_eq!(
            remote_resolvers(&servers),
            vec![servers[4], servers[5], servers[6]]
        );
    }
}
