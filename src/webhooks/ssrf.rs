//! Which destinations a webhook may reach.
//!
//! By default a delivery may not reach loopback, private (RFC 1918, ULA `fc00::/7`), link-local
//! (`169.254/16`, `fe80::/10`, which holds the cloud metadata addresses `169.254.169.254` and,
//! inside the ULA range, `fd00:ec2::254`), unspecified, CGNAT (`100.64/10`), multicast or
//! reserved addresses, nor the IPv4-mapped, -compatible, SIIT-translated, NAT64 (`64:ff9b::/96`),
//! 6to4 (`2002::/16`) or Teredo forms of those; local-use NAT64 (`64:ff9b:1::/48`) is refused
//! whole, since its embedding is each network's own choice. The check runs
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
    // A form that carries an IPv4 address reaches that address (through the host's own stack,
    // a translator or a relay), so it is judged by the IPv4 rules.
    if let Some(v4) = embedded_v4(&s) {
        return is_refused_v4(v4);
    }
    // Local-use NAT64 (RFC 8215): the network's own translators, embedding as they are set up
    // (any prefix length of RFC 6052), so no single embedded address can be trusted.
    (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
        || (s[0] & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254 included)
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
}

/// The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one.
fn embedded_v4(s: &[u16; 8]) -> Option<Ipv4Addr> {
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    match s {
        // IPv4-compatible (::a.b.c.d) and IPv4-mapped (::ffff:a.b.c.d, ::ffff:0:0/96).
        [0, 0, 0, 0, 0, 0 | 0xffff, hi, lo] => Some(v4(*hi, *lo)),
        // SIIT-translated (::ffff:0:a.b.c.d, ::ffff:0:0:0/96, RFC 2765).
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => Some(v4(*hi, *lo)),
        // Well-known NAT64 (64:ff9b::/96, RFC 6052).
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(*hi, *lo)),
        // 6to4 (2002::/16, RFC 3056): 2002:AABB:CCDD::/48 is the network of AA.BB.CC.DD.
        [0x2002, hi, lo, ..] => Some(v4(*hi, *lo)),
        // Teredo (2001:0::/32, RFC 4380): the client's address, inverted, in the last 32 bits.
        [0x2001, 0, _, _, _, _, hi, lo] => Some(v4(!*hi, !*lo)),
        _ => None,
    }
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

    #[test]
    fn local_use_nat64_addresses_are_refused_whatever_they_embed() {
        // 64:ff9b:1::/48 (RFC 8215) is for translators inside a network: its embedding is the
        // operator's choice, so the whole range is refused.
        for a in [
            "64:ff9b:1::1",
            "64:ff9b:1:a00:1::",
            "64:ff9b:1:808:808::",
            "64:ff9b:1:ffff::1",
        ] {
            assert!(refused(a), "{a} should be refused");
        }
        assert!(!refused("64:ff9b:2::808:808"), "outside the /48");
    }

    #[test]
    fn well_known_nat64_addresses_are_judged_by_their_ipv4_address() {
        for a in [
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::c0a8:101",
            "64:ff9b::a00:1",
        ] {
            assert!(refused(a), "{a} should be refused");
        }
        assert!(!refused("64:ff9b::808:808"), "NAT64 of 8.8.8.8");
    }

    #[test]
    fn six_to_four_addresses_are_judged_by_their_ipv4_address() {
        // 2002:AABB:CCDD::/48 is the 6to4 network of the IPv4 address AA.BB.CC.DD.
        for a in [
            "2002:7f00:1::1",       // 127.0.0.1
            "2002:a9fe:a9fe::1",    // 169.254.169.254
            "2002:c0a8:101::",      // 192.168.1.1
            "2002:a00:1:2:3:4:5:6", // 10.0.0.1
            "2002::1",              // 0.0.0.0
        ] {
            assert!(refused(a), "{a} should be refused");
        }
        assert!(!refused("2002:808:808::1"), "6to4 of 8.8.8.8");
    }

    #[test]
    fn ipv4_mapped_and_translated_addresses_are_judged_by_their_ipv4_address() {
        // ::ffff:0:0/96 (mapped) and ::ffff:0:0:0/96 (SIIT-translated, RFC 2765).
        for a in [
            "::ffff:7f00:1",
            "::ffff:a9fe:a9fe",
            "::ffff:10.0.0.1",
            "::ffff:0:7f00:1",
            "::ffff:0:a9fe:a9fe",
            "::ffff:0:192.168.0.1",
        ] {
            assert!(refused(a), "{a} should be refused");
        }
        assert!(!refused("::ffff:808:808"));
        assert!(!refused("::ffff:0:808:808"));
    }

    #[test]
    fn teredo_addresses_are_judged_by_their_client_ipv4_address() {
        // 2001:0::/32: the last 32 bits are the client's IPv4 address, inverted.
        assert!(
            refused("2001:0:4136:e378:8000:63bf:80ff:fffe"),
            "client 127.0.0.1"
        );
        assert!(
            refused("2001:0:4136:e378:8000:63bf:f5ff:fffe"),
            "client 10.0.0.1"
        );
        assert!(
            !refused("2001:0:4136:e378:8000:63bf:f7f7:f7f7"),
            "client 8.8.8.8"
        );
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
