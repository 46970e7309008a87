//! HTTP origins a subscriber may reach (`http = [...]`): a scheme, a host
//! and a port, nothing else.
//!
//! - `"https://api.example.com"`: that host, on port 443 (80 for `http`)
//!   unless the entry names another (`"http://10.0.0.5:8080"`).
//! - `"https://*.example.com"`: any name under example.com (not the name
//!   itself), same scheme and port rules.
//! - An IP literal (`"http://127.0.0.1:8080"`, `"http://[::1]:8080"`)
//!   reaches exactly that address.
//! - Loopback, private, link-local (cloud metadata) and other internal
//!   addresses are reached only through an IP-literal entry, or an entry
//!   written `{ origin = "http://payments.internal:8080", internal = true }`;
//!   a name that resolves to one is refused otherwise, so a tenant that
//!   controls a granted name's DNS cannot point it inside the network.

use std::fmt;
use std::net::IpAddr;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// As written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Which hosts an origin covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Exactly this name (lowercase).
    Name(String),
    /// Any name ending in `.<this>` (lowercase).
    Subdomains(String),
    /// Exactly this address.
    Ip(IpAddr),
}

/// One entry of an `http` grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The scheme.
    pub scheme: Scheme,
    /// The host or hosts.
    pub host: Host,
    /// The port.
    pub port: u16,
    /// Whether it may reach internal addresses through a name.
    pub internal: bool,
}

impl Origin {
    /// Parses `"https://host[:port]"`; `internal` as given in the table form.
    pub fn parse(text: &str, internal: bool) -> Result<Origin, String> {
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err(format!(
                "{text:?} is not an origin: write \"https://host\" or \"http://host:port\""
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "{text:?} is not an origin: a grant names scheme, host and port only (no path, query or user)"
            ));
        }
        let (host, port) = split_host_port(rest)
            .ok_or_else(|| format!("{text:?} is not an origin: bad host or port"))?;
        let port = port.unwrap_or(scheme.default_port());
        let host = if let Ok(ip) = host.parse::<IpAddr>() {
            Host::Ip(ip)
        } else {
            let name = host.to_ascii_lowercase();
            let (wild, name) = match name.strip_prefix("*.") {
                Some(n) => (true, n.to_string()),
                None => (false, name),
            };
            let valid = !name.is_empty()
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !valid {
                return Err(format!(
                    "{text:?} is not an origin: {host:?} is not a host name (a wildcard is only \"*.\" before a name)"
                ));
            }
            if wild {
                Host::Subdomains(name)
            } else {
                Host::Name(name)
            }
        };
        Ok(Origin {
            scheme,
            host,
            port,
            internal,
        })
    }

    /// Whether a request to `scheme://host:port` is covered.
    pub fn matches(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        if scheme != self.scheme || port != self.port {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match &self.host {
            Host::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
            Host::Name(n) => host.eq_ignore_ascii_case(n),
            Host::Subdomains(n) => {
                let host = host.to_ascii_lowercase();
                host.len() > n.len() + 1 && host.ends_with(n.as_str()) && {
                    host.as_bytes()[host.len() - n.len() - 1] == b'.'
                }
            }
        }
    }

    /// Whether everything `other` reaches, this reaches too (a tenant's
    /// grant bounding a subscriber's).
    pub fn covers(&self, other: &Origin) -> bool {
        if self.scheme != other.scheme || self.port != other.port {
            return false;
        }
        if other.internal && !self.internal {
            return false;
        }
        match (&self.host, &other.host) {
            (Host::Ip(a), Host::Ip(b)) => a == b,
            (Host::Name(a), Host::Name(b)) => a == b,
            (Host::Subdomains(a), Host::Subdomains(b)) => b == a || b.ends_with(&format!(".{a}")),
            (Host::Subdomains(a), Host::Name(b)) => b.ends_with(&format!(".{a}")),
            _ => false,
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((v6, port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((s, None)),
    }
    .filter(|(h, _)| !h.is_empty())
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        match &self.host {
            Host::Name(n) => write!(f, "{n}")?,
            Host::Subdomains(n) => write!(f, "*.{n}")?,
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            Host::Ip(ip) => write!(f, "{ip}")?,
        }
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        if self.internal {
            write!(f, " (internal)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(s: &str) -> Origin {
        Origin::parse(s, false).unwrap()
    }

    #[test]
    fn origins_parse_with_default_ports() {
        assert_eq!(
            o("https://API.example.com").to_string(),
            "https://api.example.com"
        );
        assert_eq!(o("https://api.example.com/").port, 443);
        assert_eq!(
            o("http://10.0.0.5:8080").host,
            Host::Ip("10.0.0.5".parse().unwrap())
        );
        assert_eq!(o("http://[::1]:8080").to_string(), "http://[::1]:8080");
        assert_eq!(
            o("https://*.example.com").host,
            Host::Subdomains("example.com".into())
        );
        for bad in [
            "api.example.com",
            "ftp://x",
            "https://x/path",
            "https://u@x",
            "https://x:port",
            "https://a.*.b",
            "https://",
            "https://x?q",
        ] {
            assert!(Origin::parse(bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_match_scheme_host_and_port() {
        let api = o("https://api.example.com");
        assert!(api.matches(Scheme::Https, "API.example.com", 443));
        assert!(!api.matches(Scheme::Http, "api.example.com", 443));
        assert!(!api.matches(Scheme::Https, "api.example.com", 8443));
        assert!(!api.matches(Scheme::Https, "api.example.com.evil.io", 443));
        let wild = o("https://*.example.com");
        assert!(wild.matches(Scheme::Https, "a.b.example.com", 443));
        assert!(!wild.matches(Scheme::Https, "example.com", 443));
        assert!(!wild.matches(Scheme::Https, "badexample.com", 443));
        let v6 = o("http://[::1]:8080");
        assert!(v6.matches(Scheme::Http, "[::1]", 8080));
    }

    #[test]
    fn a_tenant_grant_covers_narrower_ones_only() {
        let tenant = o("https://*.acme.example");
        assert!(tenant.covers(&o("https://api.acme.example")));
        assert!(tenant.covers(&o("https://*.eu.acme.example")));
        assert!(!tenant.covers(&o("https://acme.example")));
        assert!(!tenant.covers(&o("http://api.acme.example")));
        assert!(!tenant.covers(&Origin::parse("https://api.acme.example", true).unwrap()));
        assert!(o("http://10.0.0.5:80").covers(&o("http://10.0.0.5")));
    }
}
