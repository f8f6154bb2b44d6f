//! The few URL operations the web sources need, over `http::Uri`: an
//! `https://` URL taken apart (host, port, request target), a redirect's
//! `Location` resolved against the URL it came from, and percent-encoding
//! of a path segment or query value.

use hyper::Uri;

/// An `https://` URL, taken apart for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpsUrl {
    /// The whole URL (cache key, logs).
    pub(crate) text: String,
    /// Host name, lower case, no brackets.
    pub(crate) host: String,
    /// Port (443 unless the URL says).
    pub(crate) port: u16,
    /// Path and query, as sent in the request line.
    pub(crate) target: String,
}

impl HttpsUrl {
    /// `text` if it is an absolute `https://` URL with a host; why not
    /// otherwise. User information (`user@host`) is refused: nothing here
    /// sends credentials, and it is a classic way to disguise a host.
    pub(crate) fn parse(text: &str) -> Result<HttpsUrl, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some(other) => return Err(format!("{text:?}: scheme {other}, only https is allowed")),
            None => return Err(format!("{text:?} is not an absolute URL")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{text:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{text:?}: user information in a URL is refused"));
        }
        let host = authority
            .host()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        let target = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(HttpsUrl {
            text: text.to_owned(),
            host,
            port: uri.port_u16().unwrap_or(443),
            // `https://h?q` has the query but no path: the request line
            // needs one.
            target: if target.starts_with('/') {
                target
            } else {
                format!("/{target}")
            },
        })
    }

    /// Where a redirect's `Location` points, from this URL: absolute
    /// URLs as they are (they must be `https://`), `/path` on the same
    /// host, anything else relative to this URL's directory.
    pub(crate) fn join(&self, location: &str) -> Result<HttpsUrl, String> {
        let location = location.trim();
        if has_scheme(location) {
            return HttpsUrl::parse(location);
        }
        if location.starts_with("//") {
            return HttpsUrl::parse(&format!("https:{location}"));
        }
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let origin = if self.port == 443 {
            format!("https://{host}")
        } else {
            format!("https://{host}:{}", self.port)
        };
        if location.starts_with('/') {
            return HttpsUrl::parse(&format!("{origin}{location}"));
        }
        let path = self.target.split(['?', '#']).next().unwrap_or("/");
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        HttpsUrl::parse(&format!("{origin}{dir}/{location}"))
    }
}

/// Whether `s` starts with a URI scheme (RFC 3986 §3.1: a letter, then
/// letters, digits, `+`, `-`, `.`, then `:`), so is absolute — not a
/// relative reference with a colon later on (`/k?next=http://x`).
fn has_scheme(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `s` percent-encoded for a path segment or a query value: everything
/// but RFC 3986's unreserved characters, byte by byte (UTF-8).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn only_https_urls_with_a_host_and_no_user_information() {
        let u = HttpsUrl::parse("https://Keys.Example:8443/vks/v1/by-email/a%40b?x=1").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("keys.example", 8443));
        assert_eq!(u.target, "/vks/v1/by-email/a%40b?x=1");
        assert_eq!(HttpsUrl::parse("https://keys.example").unwrap().target, "/");
        // Found by the fuzzer: a query without a path.
        assert_eq!(HttpsUrl::parse("https://o.es?:/").unwrap().target, "/?:/");
        for bad in [
            "http://keys.example/",
            "ftp://keys.example/",
            "//keys.example/",
            "/relative",
            "https://user@evil.example/",
            "https://",
            "not a url",
        ] {
            assert!(HttpsUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirects_resolve_against_the_url_they_came_from() {
        let base = HttpsUrl::parse("https://h.example/.well-known/openpgpkey/hu/abc?l=x").unwrap();
        assert_eq!(base.join("/other").unwrap().text, "https://h.example/other");
        assert_eq!(
            base.join("def?l=y").unwrap().text,
            "https://h.example/.well-known/openpgpkey/hu/def?l=y"
        );
        assert_eq!(base.join("https://o.example/k").unwrap().host, "o.example");
        assert_eq!(base.join("//o.example/k").unwrap().host, "o.example");
        let v6 = HttpsUrl::parse("https://[2001:db8::1]:8443/a/b").unwrap();
        assert_eq!(v6.join("c").unwrap().text, "https://[2001:db8::1]:8443/a/c");
        // A downgrade is refused wherever it hides.
        assert!(base.join("http://h.example/k").is_err());
        assert!(base.join(" HTTP://h.example/k").is_err());
        assert!(base.join("javascript:alert(1)").is_err());
        assert!(base.join("http:/h.example/k").is_err());
        // A colon later on does not make a relative reference absolute.
        assert_eq!(
            base.join("/k?next=http://x.example/").unwrap().text,
            "https://h.example/k?next=http://x.example/"
        );
    }

    #[test]
    fn percent_encoding_leaves_only_unreserved_characters() {
        assert_eq!(percent_encode("Joe.Doe"), "Joe.Doe");
        assert_eq!(percent_encode("a+b@x.example"), "a%2Bb%40x.example");
        assert_eq!(percent_encode("a b/?#&"), "a%20b%2F%3F%23%26");
        assert_eq!(percent_encode("ü"), "%C3%BC");
    }
}
