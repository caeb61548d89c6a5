//! Which destinations a webhook may reach.
//!
//! By default a delivery may not reach loopback, private (RFC 1918, ULA `fc00::/7`), link-local
//! (`169.254/16`, `fe80::/10`, which holds the cloud metadata addresses `169.254.169.254` and,
//! inside the ULA range, `fd00:ec2::254`), unspecified, CGNAT (`100.64/10`), multicast or
//! reserved addresses, nor the IPv4-mapped, -compatible or NAT64 forms of those. The check runs
//! on the **resolved** address at delivery time (see [`FilteringResolver`]), so a name that
//! resolves to a private address (DNS rebinding included) is refused too; literal addresses
//! and `localhost` names are refused at submission already. `--allow-private-webhooks` lifts
//! every check (tests, private networks).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// True if a delivery must not reach `ip` (unless private webhooks are allowed).
pub(crate) fn is_refused_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_refused_v4(v4),
        IpAddr::V6(v6) => is_refused_v6(v6),
    }
}

fn is_refused_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0                                  // "this network", unspecified
        || a == 10                          // RFC 1918
        || a == 127                         // loopback
        || (a == 100 && (64..128).contains(&b)) // CGNAT
        || (a == 169 && b == 254)           // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b)) // RFC 1918
        || (a == 192 && b == 168)           // RFC 1918
        || (a == 192 && b == 0 && c == 0)   // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 224 // multicast, reserved, broadcast
}

fn is_refused_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if ip.is_unspecified() || ip.is_loopback() {
        return true;
    }
    // IPv4-mapped (::ffff:a.b.c.d) and -compatible (::a.b.c.d): judge the IPv4 address.
    if let Some(v4) = ip.to_ipv4() {
        return is_refused_v4(v4);
    }
    // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return is_refused_v4(v4);
    }
    (s[0] & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254 included)
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
}

/// True if the URL names a refused destination literally: an IP address in a refused range,
/// or `localhost` / `*.localhost` (RFC 6761). Such a URL is a 400 at submission.
pub(crate) fn is_refused_literal(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    match u.host() {
        Some(url::Host::Ipv4(v4)) => is_refused_v4(v4),
        Some(url::Host::Ipv6(v6)) => is_refused_v6(v6),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        None => false,
    }
}

/// True if the URL's host is an IP address in a refused range (addresses never reach the
/// resolver, so the sender checks them itself; names are checked by [`FilteringResolver`]).
pub(crate) fn is_refused_address_literal(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(v4)) => is_refused_v4(v4),
        Some(url::Host::Ipv6(v6)) => is_refused_v6(v6),
        _ => false,
    }
}

/// A reqwest resolver that drops refused addresses from every answer, so the connection can
/// only go to a vetted address (the check and the connect use the same answer: no rebinding
/// window).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FilteringResolver {
    pub(crate) allow_private: bool,
}

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow || !is_refused_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{host} resolves only to refused (loopback, private, link-local) addresses"
                )
                .into();
                return Err(e);
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        is_refused_ip(s.parse().expect("an address"))
    }

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_refused() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "255.255.255.255",
            "224.0.0.1",
        ] {
            assert!(refused(a), "{a} should be refused");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!refused(a), "{a} should be allowed");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_at_connection_time() {
        // The sender's client resolves through the filter: `localhost` gets no address.
        let cfg = crate::webhooks::WebhookConfig::default();
        let client = crate::webhooks::client(&cfg).expect("client");
        let err = client
            .post("http://localhost:9/hook")
            .send()
            .await
            .expect_err("refused");
        let text = crate::webhooks::error_chain(&err);
        assert!(text.contains("refused"), "{text}");
        let resolver = FilteringResolver {
            allow_private: true,
        };
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let addrs: Vec<SocketAddr> = reqwest::dns::Resolve::resolve(&resolver, name)
            .await
            .expect("resolves")
            .collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");
    }

    #[test]
    fn literal_private_urls_and_localhost_names_are_refused() {
        assert!(is_refused_literal("http://127.0.0.1:8080/hook"));
        assert!(is_refused_literal("http://[::1]/hook"));
        assert!(is_refused_literal("https://localhost/hook"));
        assert!(is_refused_literal("https://LOCALHOST./hook"));
        assert!(is_refused_literal("https://api.localhost/hook"));
        assert!(is_refused_literal(
            "http://169.254.169.254/latest/meta-data"
        ));
        assert!(!is_refused_literal("https://example.com/hook"));
        assert!(!is_refused_literal("https://8.8.8.8/hook"));
    }
}
