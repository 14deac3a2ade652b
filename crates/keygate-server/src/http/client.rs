//! Who the client is on the network: its address and whether it reached us over HTTPS, decided
//! once per request by [`client_info`] and read everywhere else from the request context (the
//! failed-authentication limit, the access log, the audit log, the HTTPS-only rules).
//!
//! Behind a TLS-terminating proxy the TCP peer is the proxy. `X-Forwarded-For` and
//! `X-Forwarded-Proto` are believed only when the peer is one of the configured trusted proxies;
//! from anyone else they are ignored, since any client can send them. The client is the
//! right-most address of `X-Forwarded-For` that is not itself a trusted proxy: each proxy
//! appends the address it saw, so entries left of the last untrusted one may be invented.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;

/// Set on every request by the connection layer: the TCP peer, whether the connection is TLS,
/// and what is kept for the life of the connection.
#[derive(Clone, Debug)]
pub struct Connection {
    pub peer: SocketAddr,
    pub tls: bool,
    pub local: Arc<ConnectionLocal>,
}

/// What a service keeps for one client connection. The gateway keeps its upstream connection
/// here: an HTTP/1.1 client's requests come one at a time, so one upstream connection serves
/// them all, with no pool to search and no task to hand the connection back to one.
#[derive(Debug, Default)]
pub struct ConnectionLocal {
    pub(crate) upstream: Mutex<Option<crate::gateway::Upstream>>,
}

/// The client as this server believes it to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    pub addr: IpAddr,
    /// The request reached us over HTTPS: our own TLS, or a trusted proxy's.
    pub secure: bool,
}

fn trusted(addr: IpAddr, proxies: &[IpNet]) -> bool {
    let addr = canonical(addr);
    proxies.iter().any(|net| net.contains(&addr))
}

/// `::ffff:10.0.0.1` is `10.0.0.1`: a dual-stack listener reports IPv4 peers that way.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The one place that decides the client's address and scheme. See the module comment.
pub fn client_info(peer: IpAddr, tls: bool, headers: &HeaderMap, proxies: &[IpNet]) -> ClientInfo {
    let peer = canonical(peer);
    if !trusted(peer, proxies) {
        return ClientInfo {
            addr: peer,
            secure: tls,
        };
    }
    let mut addr = peer;
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map_while(|s| parse_forwarded_addr(s.trim()))
        .collect();
    for hop in forwarded.iter().rev() {
        addr = canonical(*hop);
        if !trusted(addr, proxies) {
            break;
        }
    }
    // The proto the proxy nearest to us saw, which is the last value it appended.
    let secure = tls
        || headers
            .get_all("x-forwarded-proto")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    ClientInfo { addr, secure }
}

/// An address as proxies write it: `203.0.113.7`, `2001:db8::1`, `[2001:db8::1]:443`,
/// `203.0.113.7:51000`.
fn parse_forwarded_addr(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// Parses `10.0.0.0/8`, `192.0.2.1` (one address) or `2001:db8::/32`.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("expected an address or CIDR such as 10.0.0.0/8, got {s:?}"))
}

/// The client of this request: from the request context the frame set, else (a router served
/// without it) the TCP peer.
impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(of_parts(parts))
    }
}

pub fn of_parts(parts: &Parts) -> ClientInfo {
    if let Some(context) = super::request_id::context() {
        return context.client;
    }
    let connection = parts.extensions.get::<Connection>();
    ClientInfo {
        addr: connection
            .map(|c| c.peer.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0])),
        secure: connection.is_some_and(|c| c.tls),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| parse_cidr(s).expect("cidr")).collect()
    }

    #[test]
    fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let info = client_info(
            "198.51.100.9".parse().expect("ip"),
            false,
            &h,
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(info.addr, "198.51.100.9".parse::<IpAddr>().expect("ip"));
        assert!(!info.secure);
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
        ]);
        let info = client_info(
            "10.0.0.1".parse().expect("ip"),
            false,
            &h,
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(info.addr, "203.0.113.7".parse::<IpAddr>().expect("ip"));
        assert!(info.secure);
    }

    #[test]
    fn a_chain_of_trusted_hops_ends_at_its_first_entry() {
        let h = headers(&[("x-forwarded-for", "10.1.1.1, 10.2.2.2")]);
        let info = client_info(
            "10.0.0.1".parse().expect("ip"),
            false,
            &h,
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(info.addr, "10.1.1.1".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn a_garbled_header_leaves_the_proxy_as_the_client() {
        let h = headers(&[("x-forwarded-for", "not-an-address")]);
        let info = client_info(
            "10.0.0.1".parse().expect("ip"),
            true,
            &h,
            &nets(&["10.0.0.1"]),
        );
        assert_eq!(info.addr, "10.0.0.1".parse::<IpAddr>().expect("ip"));
        assert!(info.secure);
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_ranges() {
        let h = headers(&[("x-forwarded-for", "[2001:db8::5]:1234")]);
        let info = client_info(
            "::ffff:10.0.0.1".parse().expect("ip"),
            false,
            &h,
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(info.addr, "2001:db8::5".parse::<IpAddr>().expect("ip"));
    }
}
