//! Declared outbound hosts and the decision whether a request may go out.
//!
//! A task lists the hosts it may reach in its descriptor; everything else is
//! denied. Each entry is one of:
//!
//! | entry | allows |
//! | --- | --- |
//! | `api.example.com` | `http` on port 80 and `https` on port 443 |
//! | `api.example.com:8443` | either scheme on port 8443 |
//! | `127.0.0.1:*` | either scheme on any port |
//! | `https://api.example.com` | `https` only, on port 443 (or the given port) |
//! | `*.example.com` | any subdomain of `example.com` (not `example.com` itself) |
//! | `[::1]:8080` | an IPv6 literal, in brackets |
//!
//! Matching compares the parsed scheme, host and port of each request with
//! the parsed rules: host names case-insensitively and without a trailing
//! dot, IP literals as written. A request that spells an allowed IP another
//! way (`2130706433`, `127.1`, `[::ffff:127.0.0.1]`) does not match and is
//! denied; so is a redirect to any host that is not declared, because every
//! hop is a new request checked here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A declared outbound host entry that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid outbound host {entry:?}: {reason}")]
pub struct InvalidOutboundRule {
    /// The entry as declared.
    pub entry: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Which ports a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    /// The default port of the request's scheme (80 for http, 443 for https).
    SchemeDefault,
    /// Exactly this port.
    Exactly(u16),
    /// Any port (`:*`).
    Any,
}

/// One parsed outbound host entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    entry: String,
    /// `Some("http")`/`Some("https")` when the entry pins a scheme.
    scheme: Option<&'static str>,
    /// Lowercase host name or IP literal (IPv6 without brackets); for a
    /// wildcard, the domain after `*.`.
    host: String,
    wildcard: bool,
    ports: Ports,
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl OutboundRule {
    /// The entry as it was declared.
    pub fn entry(&self) -> &str {
        &self.entry
    }

    /// Whether a request to `scheme://host:port` is allowed by this rule.
    /// `port` is `None` when the request names none (the scheme's default).
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        let Some(scheme_port) = default_port(&scheme) else {
            return false;
        };
        if self.scheme.is_some_and(|s| s != scheme) {
            return false;
        }
        let port = port.unwrap_or(scheme_port);
        let port_ok = match self.ports {
            Ports::Any => true,
            Ports::Exactly(p) => p == port,
            Ports::SchemeDefault => port == scheme_port,
        };
        if !port_ok {
            return false;
        }
        let host = normalize_host(host.trim_start_matches('[').trim_end_matches(']'));
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            !host.is_empty() && host == self.host
        }
    }
}

impl FromStr for OutboundRule {
    type Err = InvalidOutboundRule;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidOutboundRule {
            entry: entry.to_owned(),
            reason,
        };
        let trimmed = entry.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        let (scheme, rest) = match trimmed.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => (Some("http"), rest),
                "https" => (Some("https"), rest),
                _ => return Err(invalid("the scheme must be http or https")),
            },
            None => (None, trimmed),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
            return Err(invalid(
                "give only a host and optional port, without path, query or user",
            ));
        }
        let (host, port) = if let Some(after_bracket) = rest.strip_prefix('[') {
            let (inside, after) = after_bracket
                .split_once(']')
                .ok_or_else(|| invalid("an IPv6 literal needs a closing ']'"))?;
            if inside.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(invalid("the text in brackets is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| invalid("expected ':' after ']'"))?,
                ),
            };
            (inside.to_owned(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (rest.to_owned(), None),
            }
        };
        let ports = match port {
            None => Ports::SchemeDefault,
            Some("*") => Ports::Any,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => Ports::Exactly(p),
                _ => return Err(invalid("the port must be a number from 1 to 65535, or *")),
            },
        };
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(domain) => (true, domain.to_owned()),
            None => (false, host),
        };
        let host = normalize_host(&host);
        if host.is_empty() {
            return Err(invalid("the host is empty"));
        }
        if host.contains('*') {
            return Err(invalid("a wildcard is allowed only as a leading '*.'"));
        }
        let is_ipv6 = host.contains(':');
        if !is_ipv6
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(invalid("the host has characters a host name cannot have"));
        }
        if wildcard && (is_ipv6 || host.parse::<std::net::Ipv4Addr>().is_ok()) {
            return Err(invalid("a wildcard needs a domain name, not an IP address"));
        }
        Ok(Self {
            entry: entry.to_owned(),
            scheme,
            host,
            wildcard,
            ports,
        })
    }
}

impl fmt::Display for OutboundRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.entry)
    }
}

/// The outbound hosts one task declared, parsed once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundRules(Vec<OutboundRule>);

impl OutboundRules {
    /// Parses every entry; the first invalid one is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, InvalidOutboundRule> {
        entries
            .iter()
            .map(|e| e.as_ref().parse())
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether any rule allows a request to `scheme://host:port`.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        self.0.iter().any(|rule| rule.allows(scheme, host, port))
    }

    /// Whether no host at all may be reached.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for OutboundRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.entry)
    }
}

impl<'de> Deserialize<'de> for OutboundRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(entries: &[&str]) -> OutboundRules {
        OutboundRules::parse(entries).expect("valid rules")
    }

    #[test]
    fn a_bare_host_allows_only_the_default_ports() {
        let r = rules(&["api.example.com"]);
        assert!(r.allows("https", "api.example.com", None));
        assert!(r.allows("http", "api.example.com", Some(80)));
        assert!(r.allows("HTTPS", "API.Example.com.", Some(443)));
        assert!(!r.allows("https", "api.example.com", Some(8443)));
        assert!(!r.allows("http", "api.example.com", Some(443)));
        assert!(!r.allows("https", "example.com", None));
        assert!(!r.allows("https", "api.example.com.evil.net", None));
    }

    #[test]
    fn ports_and_schemes_pin_what_they_name() {
        let r = rules(&["127.0.0.1:8080", "https://secure.example.com"]);
        assert!(r.allows("http", "127.0.0.1", Some(8080)));
        assert!(!r.allows("http", "127.0.0.1", Some(8081)));
        assert!(!r.allows("http", "127.0.0.1", None));
        assert!(r.allows("https", "secure.example.com", None));
        assert!(!r.allows("http", "secure.example.com", None));
        let any = rules(&["127.0.0.1:*"]);
        assert!(any.allows("http", "127.0.0.1", Some(1)));
        assert!(any.allows("https", "127.0.0.1", None));
        assert!(!any.allows("ftp", "127.0.0.1", Some(21)));
    }

    #[test]
    fn ip_literal_tricks_do_not_match_a_declared_address() {
        let r = rules(&["127.0.0.1:*"]);
        for trick in [
            "2130706433",
            "127.1",
            "0x7f.0.0.1",
            "127.000.000.001",
            "::ffff:127.0.0.1",
            "[::ffff:127.0.0.1]",
            "localhost",
            "",
        ] {
            assert!(!r.allows("http", trick, Some(80)), "{trick} must be denied");
        }
        let v6 = rules(&["[::1]:8080"]);
        assert!(v6.allows("http", "[::1]", Some(8080)));
        assert!(!v6.allows("http", "[::1]", Some(8081)));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let r = rules(&["*.example.com"]);
        assert!(r.allows("https", "a.example.com", None));
        assert!(r.allows("https", "a.b.example.com", None));
        assert!(!r.allows("https", "example.com", None));
        assert!(!r.allows("https", "badexample.com", None));
    }

    #[test]
    fn malformed_entries_are_refused_with_a_reason() {
        for bad in [
            "",
            "https://",
            "ftp://x.com",
            "x.com/path",
            "user@x.com",
            "x.com:0",
            "x.com:99999",
            "a*.com",
            "*.1.2.3.4",
            "[::1",
            "[zz]:80",
            "two words",
        ] {
            let err = bad.parse::<OutboundRule>().expect_err(bad);
            assert_eq!(err.entry, bad);
        }
    }
}
