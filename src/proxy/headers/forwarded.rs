//! `X-Forwarded-For`, `-Proto`, `-Host` (the de-facto standard that RFC 7239
//! `Forwarded` formalised). A client's own values are believed only when the
//! peer is one of `server.trusted_proxies`; otherwise they are replaced, and
//! its `Forwarded` and `X-Real-IP` (the other ways to name the client) are
//! removed.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// `X-Forwarded-For`.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Prefix`: set by the embed route, never taken from an untrusted client.
pub(crate) static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
/// `X-Real-IP`, nginx's: who the client is, to an upstream that reads it.
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// How the client reached the gateway: what `X-Forwarded-Proto` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The facts about one client connection that forwarding headers report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer<'a> {
    /// The TCP peer's address.
    pub(crate) ip: IpAddr,
    /// That address as a header value ([`ip_value`]), when already made.
    pub(crate) ip_value: Option<&'a HeaderValue>,
    /// Whether it spoke TLS to the gateway.
    pub(crate) scheme: Scheme,
    /// `server.trusted_proxies`.
    pub(crate) trusted_proxies: &'a [IpNet],
}

impl Peer<'_> {
    /// Whether the peer is a proxy whose forwarding headers are believed.
    pub(crate) fn is_trusted(&self) -> bool {
        if self.trusted_proxies.is_empty() {
            return false;
        }
        let ip = canonical(self.ip);
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the left-most `X-Forwarded-For` entry behind a
    /// trusted proxy (when it parses), else the peer itself.
    pub(crate) fn client_ip(&self, headers: &HeaderMap) -> IpAddr {
        if self.is_trusted() {
            let first = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next()
                .and_then(|s| s.trim().parse::<IpAddr>().ok());
            if let Some(ip) = first {
                return canonical(ip);
            }
        }
        canonical(self.ip)
    }
}

/// Sets the `X-Forwarded-*` fields for the upstream request. `host` is the
/// client's `Host` (or HTTP/2 `:authority`) as received.
pub(crate) fn apply(headers: &mut HeaderMap, peer: &Peer<'_>, host: Option<HeaderValue>) {
    let peer_value = peer.ip_value.cloned().unwrap_or_else(|| ip_value(peer.ip));
    if peer.is_trusted() {
        let peer_ip = peer_value.to_str().unwrap_or_default();
        let prior: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let chain = if prior.is_empty() {
            peer_ip.to_owned()
        } else {
            format!("{}, {}", prior.join(", "), peer_ip)
        };
        set(headers, &X_FORWARDED_FOR, &chain);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(
                X_FORWARDED_PROTO.clone(),
                HeaderValue::from_static(peer.scheme.as_str()),
            );
        }
        if !headers.contains_key(&X_FORWARDED_HOST) {
            if let Some(host) = host {
                headers.insert(X_FORWARDED_HOST.clone(), host);
            }
        }
    } else {
        headers.insert(X_FORWARDED_FOR.clone(), peer_value);
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(peer.scheme.as_str()),
        );
        // What an untrusted client may have sent, from one pass over the
        // names (compared, not hashed): most requests have none of it.
        // `Forwarded` and `X-Real-IP` are other ways to say who the client
        // is: not the gateway's to vouch for, and not the client's to claim.
        let (mut prefix, mut claims, mut forwarded_host) = (false, false, false);
        for name in headers.keys() {
            if name == X_FORWARDED_PREFIX {
                prefix = true;
            } else if name == X_FORWARDED_HOST {
                forwarded_host = true;
            } else if name == header::FORWARDED || name == X_REAL_IP {
                claims = true;
            }
        }
        if prefix {
            headers.remove(&X_FORWARDED_PREFIX);
        }
        if claims {
            headers.remove(header::FORWARDED);
            headers.remove(&X_REAL_IP);
        }
        match host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST.clone(), host);
            }
            None if forwarded_host => {
                headers.remove(&X_FORWARDED_HOST);
            }
            None => {}
        }
    }
}

fn set(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    // Built from parsed IPs and already-valid header text: always valid.
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name.clone(), v);
    }
}

/// An address as `X-Forwarded-For` gives it (IPv4-mapped IPv6 as IPv4).
pub(crate) fn ip_value(ip: IpAddr) -> HeaderValue {
    // An address's text is always a valid header value.
    HeaderValue::from_str(&canonical(ip).to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, as a dual-stack socket
/// reports IPv4 peers) is the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer<'a>(ip: &str, trusted: &'a [IpNet]) -> Peer<'a> {
        Peer {
            ip: ip.parse().expect("an IP address"),
            ip_value: None,
            scheme: Scheme::Https,
            trusted_proxies: trusted,
        }
    }

    #[test]
    fn untrusted_peer_values_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR.clone(), HeaderValue::from_static("6.6.6.6"));
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("gopher"));
        h.insert(X_FORWARDED_PREFIX.clone(), HeaderValue::from_static("/evil"));
        let p = peer("10.0.0.1", &[]);
        apply(&mut h, &p, Some(HeaderValue::from_static("gw.example")));
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "gw.example");
        assert!(!h.contains_key(&X_FORWARDED_PREFIX));
        assert_eq!(p.client_ip(&h), "10.0.0.1".parse::<IpAddr>().unwrap_or(p.ip));
    }

    #[test]
    fn trusted_peer_chain_is_extended() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("a CIDR")];
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR.clone(), HeaderValue::from_static("1.2.3.4, 5.6.7.8"));
        h.append(X_FORWARDED_FOR.clone(), HeaderValue::from_static("9.9.9.9"));
        let p = peer("::ffff:10.0.0.1", &nets);
        assert!(p.is_trusted());
        assert_eq!(p.client_ip(&h).to_string(), "1.2.3.4");
        apply(&mut h, &p, None);
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 5.6.7.8, 9.9.9.9, 10.0.0.1");
    }
}
