//! Where the platform connects on a tenant's behalf — webhook deliveries, plugins' HTTP
//! requests, audit forwarding to syslog: only to public unicast addresses, unless the operator
//! lists the host in `webhooks.allow_hosts`. Checked when the target is saved (the host
//! resolved now) and again at every connection, at connect time: HTTP clients resolve names
//! through [`GuardedResolver`], others through [`resolve`], both of which drop every address
//! that is loopback, private, link-local (cloud metadata at 169.254.169.254 included), shared,
//! multicast, reserved or otherwise not globally routable, so a name that changes its answer
//! after the save (DNS rebinding) still reaches nothing inside; an address literal chosen at
//! run time is checked by [`literal_permitted`]. Redirects are never followed (the clients'
//! policy), and no system proxy is used.
//!
//! Foundation: std and crates only. Never logs the addresses it refuses beyond the host the
//! tenant typed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// The operator's exceptions: `host` (any port) or `host:port`, compared with the URL's host
/// as written (lower case).
#[derive(Debug, Clone, Default)]
pub struct AllowList(Arc<Vec<(String, Option<u16>)>>);

impl AllowList {
    /// Parses a comma-separated list (`127.0.0.1:9000, hooks.internal`).
    pub fn parse(list: &str) -> Self {
        let entries = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let s = s.to_ascii_lowercase();
                match s.rsplit_once(':') {
                    Some((h, _)) if !h.ends_with(']') && h.contains(':') => (s.clone(), None),
                    Some((h, p)) => match p.parse::<u16>() {
                        Ok(port) => (h.trim_matches(['[', ']']).to_string(), Some(port)),
                        Err(_) => (s.clone(), None),
                    },
                    None => (s.trim_matches(['[', ']']).to_string(), None),
                }
            })
            .collect();
        Self(Arc::new(entries))
    }

    /// Whether a host (as in the URL, without brackets) and port are listed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        self.0
            .iter()
            .any(|(h, p)| *h == host && p.is_none_or(|p| p == port))
    }

    fn allows_name(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.0.iter().any(|(h, _)| *h == host)
    }
}

/// Whether an address is globally routable unicast (the only kind a webhook may reach).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let o = v6.octets();
                return public_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            public_v6(v6)
        }
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        // shared address space (carrier-grade NAT)
        || (o[0] == 100 && (64..128).contains(&o[1]))
        // IETF protocol assignments
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        // benchmarking
        || (o[0] == 198 && (18..20).contains(&o[1]))
        // reserved (240/4)
        || o[0] >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // unique local fc00::/7 (cloud metadata at fd00:ec2::254 included)
        || (s[0] & 0xfe00) == 0xfc00
        // link-local fe80::/10 and the old site-local fec0::/10
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        // documentation 2001:db8::/32
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        // IPv4-compatible (deprecated) ::a.b.c.d
        || (s[0..6] == [0, 0, 0, 0, 0, 0]))
}

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not an absolute `http(s)` URL with a host, or it carries credentials or a fragment.
    Url(&'static str),
    /// The host is or resolves to an address a webhook may not reach.
    Private(String),
    /// The host does not resolve.
    Unresolvable(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Url(why) => f.write_str(why),
            Refusal::Private(host) => write!(
                f,
                "`{host}` is or resolves to a loopback, private, link-local, metadata, multicast or reserved address"
            ),
            Refusal::Unresolvable(host) => write!(f, "`{host}` does not resolve"),
        }
    }
}

/// Checks the shape of an endpoint URL (no network).
pub fn check_shape(raw: &str) -> Result<url::Url, Refusal> {
    if raw.len() > 2048 {
        return Err(Refusal::Url("the URL is longer than 2048 characters"));
    }
    let url = url::Url::parse(raw).map_err(|_| Refusal::Url("not an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refusal::Url(
            "only http and https URLs can receive webhooks",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Refusal::Url("the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::Url("the URL must not carry credentials"));
    }
    if url.fragment().is_some() {
        return Err(Refusal::Url("the URL must not have a fragment"));
    }
    Ok(url)
}

/// Checks a URL's host now: an allowed host passes; an address literal must be public; a
/// name must resolve, and only to public addresses.
pub async fn check(url: &url::Url, allow: &AllowList) -> Result<(), Refusal> {
    let host = url.host_str().unwrap_or_default();
    check_host(host, url.port_or_known_default().unwrap_or(443), allow).await
}

/// [`check`] for a host and port (a syslog collector, say).
pub async fn check_host(host: &str, port: u16, allow: &AllowList) -> Result<(), Refusal> {
    if allow.allows(host, port) {
        return Ok(());
    }
    if let Some(ip) = literal(host) {
        return public_or(ip, host);
    }
    let addrs = lookup(host, port).await;
    if addrs.is_empty() {
        return Err(Refusal::Unresolvable(host.to_string()));
    }
    if addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(Refusal::Private(host.to_string()));
    }
    Ok(())
}

/// The addresses a connection to `host:port` may use now: all of them for an allowed host,
/// else the public ones (refused when none is left).
pub async fn resolve(host: &str, port: u16, allow: &AllowList) -> Result<Vec<SocketAddr>, Refusal> {
    let open = allow.allows(host, port);
    let addrs = match literal(host) {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => lookup(host, port).await,
    };
    if addrs.is_empty() {
        return Err(Refusal::Unresolvable(host.to_string()));
    }
    let kept: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| open || is_public(a.ip()))
        .collect();
    if kept.is_empty() {
        return Err(Refusal::Private(host.to_string()));
    }
    Ok(kept)
}

/// Whether a URL chosen at run time may be requested before any name is resolved: an allowed
/// host, a name (its addresses are the resolver's to check), or a public address literal.
pub fn literal_permitted(url: &url::Url, allow: &AllowList) -> bool {
    let host = url.host_str().unwrap_or_default();
    if allow.allows(host, url.port_or_known_default().unwrap_or(443)) {
        return true;
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) => is_public(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_public(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => !is_local_name(name),
        None => false,
    }
}

/// Whether a granted `host` or `host:port` names an inside address the operator has not
/// allowed: an address literal that is not public, or `localhost`. Names are left to the
/// connection-time checks.
pub fn refuses_grant(grant: &str, allow: &AllowList) -> bool {
    let (host, port) = grant_parts(grant);
    let allowed = match port {
        Some(p) => allow.allows(host, p),
        None => allow.allows_name(host),
    };
    if allowed {
        return false;
    }
    match literal(host) {
        Some(ip) => !is_public(ip),
        None => is_local_name(host),
    }
}

/// The host (without brackets) and port of a `host` or `host:port` grant.
pub fn grant_parts(grant: &str) -> (&str, Option<u16>) {
    let (host, port) = match grant.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, p.parse::<u16>().ok()),
        _ => (grant, None),
    };
    (host.trim_matches(['[', ']']), port)
}

fn is_local_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// An address literal (`10.0.0.1`, `::1`, `[::1]`).
fn literal(host: &str) -> Option<IpAddr> {
    host.trim_matches(['[', ']']).parse().ok()
}

async fn lookup(host: &str, port: u16) -> Vec<SocketAddr> {
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::lookup_host((host, port)),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(Iterator::collect)
    .unwrap_or_default()
}

fn public_or(ip: IpAddr, host: &str) -> Result<(), Refusal> {
    if is_public(ip) {
        Ok(())
    } else {
        Err(Refusal::Private(host.to_string()))
    }
}

/// The HTTP client's resolver: answers only public addresses (all of them for an allowed
/// name), so a connection can never reach an inside address through a name.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow: AllowList,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let open = allow.allows_name(&host);
            let kept: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| open || is_public(a.ip()))
                .collect();
            if kept.is_empty() {
                return Err(
                    Box::new(std::io::Error::other(Refusal::Private(host).to_string()))
                        as Box<dyn std::error::Error + Send + Sync>,
                );
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;

    #[tokio::test]
    async fn the_resolver_answers_only_public_addresses_unless_allowed() {
        let guarded = GuardedResolver {
            allow: AllowList::default(),
        };
        let name = |n: &str| n.parse::<reqwest::dns::Name>().unwrap();
        assert!(guarded.resolve(name("localhost")).await.is_err());
        let open = GuardedResolver {
            allow: AllowList::parse("localhost"),
        };
        let addrs: Vec<SocketAddr> = open.resolve(name("localhost")).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
        // Connections by host and port.
        assert!(
            resolve("127.0.0.1", 514, &AllowList::default())
                .await
                .is_err()
        );
        assert!(
            resolve("localhost", 514, &AllowList::default())
                .await
                .is_err()
        );
        let allowed = AllowList::parse("127.0.0.1:514");
        assert!(resolve("127.0.0.1", 514, &allowed).await.is_ok());
        assert!(resolve("127.0.0.1", 6379, &allowed).await.is_err());
        assert!(check_host("169.254.169.254", 80, &allowed).await.is_err());
    }

    #[test]
    fn run_time_literals_and_grants_inside_are_refused() {
        let none = AllowList::default();
        let url = |u: &str| url::Url::parse(u).unwrap();
        for inside in [
            "http://127.0.0.1:6379/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://10.0.0.7/",
            "http://localhost:8080/",
        ] {
            assert!(!literal_permitted(&url(inside), &none), "{inside}");
        }
        assert!(literal_permitted(&url("https://api.example.com/x"), &none));
        assert!(literal_permitted(&url("https://93.184.215.14/"), &none));
        assert!(literal_permitted(
            &url("http://127.0.0.1:9000/"),
            &AllowList::parse("127.0.0.1")
        ));
        for grant in [
            "169.254.169.254",
            "127.0.0.1:6379",
            "[::1]:80",
            "localhost",
            "10.1.2.3",
        ] {
            assert!(refuses_grant(grant, &none), "{grant}");
        }
        for grant in ["api.example.com", "api.example.com:8443", "93.184.215.14"] {
            assert!(!refuses_grant(grant, &none), "{grant}");
        }
        assert!(!refuses_grant(
            "127.0.0.1:9",
            &AllowList::parse("127.0.0.1")
        ));
        assert!(refuses_grant(
            "127.0.0.1:6379",
            &AllowList::parse("127.0.0.1:9")
        ));
    }

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn inside_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "::127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!public(ip), "{ip} must be refused");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::6810:85e5",
            "::ffff:8.8.8.8",
        ] {
            assert!(public(ip), "{ip} is public");
        }
    }

    #[test]
    fn urls_are_shaped_before_anything_resolves() {
        assert!(check_shape("https://example.com/hook").is_ok());
        for bad in [
            "ftp://example.com/",
            "/relative",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "javascript:alert(1)",
        ] {
            assert!(check_shape(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn literals_and_names_are_checked_unless_allowed() {
        let none = AllowList::default();
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert!(matches!(
            check(&u("http://127.0.0.1:9/"), &none).await,
            Err(Refusal::Private(_))
        ));
        assert!(matches!(
            check(&u("http://[::1]:9/"), &none).await,
            Err(Refusal::Private(_))
        ));
        assert!(matches!(
            check(&u("http://localhost:9/"), &none).await,
            Err(Refusal::Private(_))
        ));
        assert!(check(&u("http://93.184.216.34/"), &none).await.is_ok());
        let allow = AllowList::parse("127.0.0.1:9, hooks.internal");
        assert!(check(&u("http://127.0.0.1:9/x"), &allow).await.is_ok());
        // Another port of an address listed with a port stays refused.
        assert!(check(&u("http://127.0.0.1:10/x"), &allow).await.is_err());
        // The name `localhost` is not the listed address.
        assert!(check(&u("http://localhost:9/"), &allow).await.is_err());
        assert!(allow.allows("HOOKS.internal", 443));
    }
}
