//! Where the storage layer may connect on a job's behalf. A job names its storage
//! endpoint, so without a policy the worker is a proxy into its own network: the cloud
//! metadata service, the broker and the database on loopback, anything private.
//!
//! The policy is checked on the addresses actually connected to. Our HTTP clients (the
//! downloader's reqwest client and the SDK's hyper client) resolve host names through
//! [`EgressResolver`], which looks a name up once and hands the connector only the
//! admitted addresses, so a second lookup cannot rebind the name to a refused one. IP
//! literals never reach a resolver: every request is checked before it is sent
//! ([`EgressPolicy::check_url`]), which also enforces the ports of the allow-list (a
//! resolver sees a name, never a port). Nothing goes through a proxy: a proxy would
//! resolve, and connect, where we cannot check.
//!
//! Refused: loopback, link-local, private (RFC 1918, fc00::/7), CGNAT, multicast,
//! unspecified, broadcast and the other special-purpose ranges (RFC 6890 and its
//! successors); IPv6 outside global unicast 2000::/3; IPv4 refused ranges in their
//! IPv4-mapped, -translated, NAT64 and 6to4 forms; the deprecated IPv4-compatible form
//! and Teredo outright (they tunnel to addresses we cannot see). The operator admits
//! on-premises storage with `ALLOWED_ENDPOINTS`; its own `AWS_ENDPOINT_URL*` hosts are
//! admitted implicitly (configuration, not job input).

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_types::SdkConfig;
use aws_types::service_config::ServiceConfigKey;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// The operator's allow-list, `ALLOWED_ENDPOINTS`: a comma-separated list of CIDRs
/// (`10.0.0.0/8`, `[fd00::/8]`), addresses (`10.1.2.3`, `[fd00::5]`) and host names
/// (`minio.corp`, `*.minio.corp` for its subdomains), each with an optional `:port`.
///
/// An address or CIDR admits URLs naming an address inside it; without a port it also
/// admits what host names resolve to (a port cannot be checked there). A host name
/// admits URLs naming that host, whatever it resolves to, on its port if it has one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedEndpoints {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    target: Target,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Net(IpNet),
    /// Lowercase, without a trailing dot.
    Host(String),
    /// `*.suffix`: any name ending in `.suffix`, not `suffix` itself.
    Subdomains(String),
}

impl AllowedEndpoints {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl FromStr for AllowedEndpoints {
    type Err = String;

    /// Parses the comma list; the error names the entry and what is wrong with it.
    fn from_str(s: &str) -> Result<Self, String> {
        let entries = s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| parse_entry(e).map_err(|why| format!("{e:?}: {why}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowedEndpoints { entries })
    }
}

fn parse_entry(e: &str) -> Result<Entry, &'static str> {
    if e.contains("://") || e.contains(['@', '?', '#']) {
        return Err("expected a CIDR, an address or a host name, each with an optional :port, not a URL");
    }
    // `[v6]`, `[v6/len]`, each with an optional `:port`.
    let (target, port) = if let Some(rest) = e.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or("an opening '[' without its ']'")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected :port after ']'")?),
        };
        (inside, port)
    } else if e.matches(':').count() > 1 {
        // A bare IPv6 address or CIDR; a port needs the brackets.
        (e, None)
    } else {
        match e.rsplit_once(':') {
            Some((t, p)) => (t, Some(p)),
            None => (e, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err("the port must be a number from 1 to 65535"),
            Ok(p) => Some(p),
        },
    };
    let target = if target.contains('/') {
        Target::Net(target.parse::<IpNet>().map_err(|_| "not a CIDR (address/prefix length)")?.trunc())
    } else if let Some(suffix) = target.strip_prefix("*.") {
        match Host::parse(suffix).map_err(|_| "not a host name")? {
            Host::Domain(d) => Target::Subdomains(normalise_name(&d)),
            _ => return Err("a wildcard needs a host name after '*.'"),
        }
    } else if let Ok(ip) = target.parse::<Ipv6Addr>() {
        Target::Net(IpNet::from(IpAddr::V6(ip)))
    } else {
        // The URL standard's host parser, so that an entry means what the same text
        // means in a URL (`2130706433` is 127.0.0.1 in both).
        match Host::parse(target).map_err(|_| "not an address or a host name")? {
            Host::Ipv4(ip) => Target::Net(IpNet::from(IpAddr::V4(ip))),
            Host::Ipv6(ip) => Target::Net(IpNet::from(IpAddr::V6(ip))),
            Host::Domain(d) if d.is_empty() || d.contains('*') => return Err("not a host name"),
            Host::Domain(d) => Target::Host(normalise_name(&d)),
        }
    };
    Ok(Entry { target, port })
}

fn normalise_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Entry {
    fn port_matches(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    fn names(&self, name: &str) -> bool {
        match &self.target {
            Target::Host(h) => h == name,
            Target::Subdomains(s) => {
                name.strip_suffix(s.as_str()).is_some_and(|head| head.len() > 1 && head.ends_with('.'))
            }
            Target::Net(_) => false,
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match &self.target {
            Target::Net(net) => net.contains(&ip) || net.contains(&ip.to_canonical()),
            _ => false,
        }
    }
}

/// Why a connection was refused: our own sentence, naming the host or address the job
/// gave (never a URL: a signed one is a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EgressRefused(String);

impl fmt::Display for EgressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for EgressRefused {}

impl EgressRefused {
    pub(crate) fn reason(&self) -> &str {
        &self.0
    }
}

/// The first [`EgressRefused`] in an error's source chain: how a refusal made deep
/// inside an HTTP client's connector is told apart from a network fault.
pub(crate) fn refusal_in<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a EgressRefused> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<EgressRefused>() {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

/// The operator's allow-list plus its own endpoints.
#[derive(Debug, Default)]
pub(crate) struct EgressPolicy {
    allowed: Vec<Entry>,
}

const HINT: &str = "the egress policy refuses it (ALLOWED_ENDPOINTS admits on-premises storage)";

impl EgressPolicy {
    pub(crate) fn new(allowed: &AllowedEndpoints, operator_endpoints: &[String]) -> Self {
        let mut entries = allowed.entries.clone();
        for raw in operator_endpoints {
            let Ok(url) = Url::parse(raw) else { continue };
            let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else { continue };
            let target = match host {
                Host::Ipv4(ip) => Target::Net(IpNet::from(IpAddr::V4(ip))),
                Host::Ipv6(ip) => Target::Net(IpNet::from(IpAddr::V6(ip))),
                Host::Domain(d) => Target::Host(normalise_name(d)),
            };
            entries.push(Entry { target, port: Some(port) });
        }
        EgressPolicy { allowed: entries }
    }

    /// Before a request is sent: the scheme, an IP-literal host with its port, and the
    /// port of an allow-listed host name. Other host names are checked on what they
    /// resolve to, by [`EgressResolver`].
    pub(crate) fn check_url(&self, url: &Url) -> Result<(), EgressRefused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EgressRefused(format!("scheme {:?} is not http or https", url.scheme())));
        }
        let port = url.port_or_known_default().unwrap_or(0);
        match url.host() {
            None => Err(EgressRefused("the URL has no host".into())),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip), port),
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip), port),
            Some(Host::Domain(d)) => {
                let name = normalise_name(d);
                let naming: Vec<&Entry> = self.allowed.iter().filter(|e| e.names(&name)).collect();
                if naming.is_empty() || naming.iter().any(|e| e.port_matches(port)) {
                    Ok(())
                } else {
                    // The resolver admits every address of an allow-listed name, so a
                    // port the operator did not list must be stopped here.
                    Err(EgressRefused(format!(
                        "host {name} is allow-listed on other ports than {port}; {HINT}"
                    )))
                }
            }
        }
    }

    /// [`EgressPolicy::check_url`] on a URL string (the SDK's requests, signed URLs).
    pub(crate) fn check_str(&self, url: &str) -> Result<(), EgressRefused> {
        let url = Url::parse(url).map_err(|_| EgressRefused("the request URL does not parse".into()))?;
        self.check_url(&url)
    }

    fn check_ip(&self, ip: IpAddr, port: u16) -> Result<(), EgressRefused> {
        if self.allowed.iter().any(|e| e.contains(ip) && e.port_matches(port)) {
            return Ok(());
        }
        match special_purpose(ip) {
            None => Ok(()),
            Some(why) => Err(EgressRefused(format!("{} is {why}; {HINT}", SocketAddr::new(ip, port)))),
        }
    }

    /// After resolution: the addresses of `name` a connection may go to. An allow-listed
    /// name keeps them all; otherwise public addresses and those inside a port-less
    /// allow-listed CIDR. None left is a refusal.
    pub(crate) fn admit_resolved(&self, name: &str, addrs: &[IpAddr]) -> Result<Vec<IpAddr>, EgressRefused> {
        let name = normalise_name(name);
        if self.allowed.iter().any(|e| e.names(&name)) {
            return Ok(addrs.to_vec());
        }
        let admitted: Vec<IpAddr> = addrs
            .iter()
            .copied()
            .filter(|ip| {
                special_purpose(*ip).is_none()
                    || self.allowed.iter().any(|e| e.port.is_none() && e.contains(*ip))
            })
            .collect();
        if !admitted.is_empty() {
            return Ok(admitted);
        }
        let why = addrs
            .first()
            .and_then(|ip| special_purpose(*ip).map(|why| format!("{ip}, {why}")))
            .unwrap_or_else(|| "no address".into());
        Err(EgressRefused(format!("host {name} resolves to {why}; {HINT}")))
    }
}

/// The operator's endpoints from the standard AWS configuration: `AWS_ENDPOINT_URL` and
/// the S3 and STS ones (`AWS_ENDPOINT_URL_S3`, `_STS`, or the profile's `endpoint_url`).
pub(crate) fn operator_endpoints(base: &SdkConfig) -> Vec<String> {
    let mut urls: Vec<String> = base.endpoint_url().map(str::to_owned).into_iter().collect();
    urls.extend(["S3", "STS"].into_iter().filter_map(|service| service_endpoint(base, service)));
    urls
}

/// Where the operator points one service (`S3`, `STS`): its own setting, else
/// `AWS_ENDPOINT_URL`; `None` for the provider's default.
pub(crate) fn operator_endpoint(base: &SdkConfig, service: &str) -> Option<String> {
    service_endpoint(base, service).or_else(|| base.endpoint_url().map(str::to_owned))
}

/// A service's own endpoint setting: `AWS_ENDPOINT_URL_<SERVICE>` or the profile's
/// services section.
fn service_endpoint(base: &SdkConfig, service: &str) -> Option<String> {
    let key = ServiceConfigKey::builder().service_id(service).env("AWS_ENDPOINT_URL").profile("endpoint_url");
    base.service_config().and_then(|services| key.build().ok().and_then(|k| services.load_config(k)))
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

/// IPv4 ranges no job may reach (IANA's special-purpose registry, the globally
/// reachable entries that are no storage service left out).
const V4_REFUSED: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 8), "in 0.0.0.0/8 (\"this network\", unspecified)"),
    (v4(10, 0, 0, 0, 8), "private (RFC 1918)"),
    (v4(100, 64, 0, 0, 10), "shared address space (CGNAT, RFC 6598)"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(169, 254, 0, 0, 16), "link-local (where cloud metadata services live)"),
    (v4(172, 16, 0, 0, 12), "private (RFC 1918)"),
    (v4(192, 0, 0, 0, 24), "an IETF protocol assignment (RFC 6890)"),
    (v4(192, 0, 2, 0, 24), "documentation (TEST-NET-1)"),
    (v4(192, 88, 99, 0, 24), "the deprecated 6to4 relay anycast"),
    (v4(192, 168, 0, 0, 16), "private (RFC 1918)"),
    (v4(198, 18, 0, 0, 15), "benchmarking (RFC 2544)"),
    (v4(198, 51, 100, 0, 24), "documentation (TEST-NET-2)"),
    (v4(203, 0, 113, 0, 24), "documentation (TEST-NET-3)"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(240, 0, 0, 0, 4), "reserved (240.0.0.0/4, broadcast included)"),
];

const fn v6(segments: [u16; 8], len: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// Inside global unicast 2000::/3, what is not global.
const V6_REFUSED_IN_GLOBAL: &[(Ipv6Net, &str)] = &[
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), "Teredo (a tunnel to an IPv4 address)"),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), "an IETF protocol assignment (2001::/23)"),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "documentation (2001:db8::/32)"),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "documentation (3fff::/20)"),
];

/// Outside 2000::/3, named for the message.
const V6_NAMED: &[(Ipv6Net, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 96), "IPv4-compatible (deprecated)"),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), "local-use NAT64 (RFC 8215)"),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard-only (RFC 6666)"),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "unique-local (private)"),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "site-local (deprecated)"),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

/// Why no job may connect to `ip`, or `None` when it is an ordinary public address.
pub(crate) fn special_purpose(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(ip) => v4_refused(ip).map(str::to_owned),
        IpAddr::V6(ip) => v6_refused(ip),
    }
}

fn v4_refused(ip: Ipv4Addr) -> Option<&'static str> {
    V4_REFUSED.iter().find(|(net, _)| net.contains(&ip)).map(|(_, why)| *why)
}

fn v6_refused(ip: Ipv6Addr) -> Option<String> {
    if let Some((form, v4)) = embedded_v4(ip) {
        return v4_refused(v4).map(|why| format!("the {form} form of {v4}, {why}"));
    }
    if !v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3).contains(&ip) {
        let why = V6_NAMED.iter().find(|(net, _)| net.contains(&ip)).map_or("not global unicast", |(_, w)| w);
        return Some(why.to_owned());
    }
    V6_REFUSED_IN_GLOBAL.iter().find(|(net, _)| net.contains(&ip)).map(|(_, why)| (*why).to_owned())
}

/// The IPv4 address an IPv6 address stands for, in the forms that reach it: mapped
/// (`::ffff:a.b.c.d`), translated (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`),
/// 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<(&'static str, Ipv4Addr)> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(("IPv4-mapped", v4));
    }
    if s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
        return Some(("IPv4-translated", low));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(("NAT64", low));
    }
    if s[0] == 0x2002 {
        return Some(("6to4", Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8)));
    }
    None
}

/// Resolves a host name once and returns only the addresses the policy admits, for
/// reqwest (`dns_resolver`) and for the SDK's hyper client (`build_with_resolver`).
#[derive(Debug, Clone)]
pub(crate) struct EgressResolver {
    pub(crate) policy: Arc<EgressPolicy>,
}

impl EgressResolver {
    async fn resolve(
        policy: Arc<EgressPolicy>,
        name: String,
    ) -> Result<Vec<IpAddr>, Box<dyn StdError + Send + Sync>> {
        let addrs: Vec<IpAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.map(|a| a.ip()).collect();
        let admitted = policy.admit_resolved(&name, &addrs)?;
        if admitted.len() < addrs.len() {
            tracing::debug!(host = %name, resolved = addrs.len(), admitted = admitted.len(), "egress policy dropped addresses");
        }
        Ok(admitted)
    }
}

impl reqwest::dns::Resolve for EgressResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (policy, name) = (self.policy.clone(), name.as_str().to_owned());
        Box::pin(async move {
            // Port 0: the connector puts the URL's port in.
            let addrs = EgressResolver::resolve(policy, name).await?;
            Ok(Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0))) as reqwest::dns::Addrs)
        })
    }
}

impl ResolveDns for EgressResolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        let (policy, name) = (self.policy.clone(), name.to_owned());
        DnsFuture::new(
            async move { EgressResolver::resolve(policy, name).await.map_err(ResolveDnsError::new) },
        )
    }
}

/// The HTTP client of the operator's own AWS identity chain (environment, profile, web
/// identity, container and instance metadata): the worker's own endpoints, some of them
/// link-local, so outside the policy, which guards what customers' jobs reach. The SDKs
/// are built without a default client (one TLS provider, ring, in the whole tree), so
/// every SDK configuration is given this one or [`sdk_http_client`].
pub fn operator_http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https()
}

/// The SDK's HTTP client under the policy: hyper with [`EgressResolver`], and every
/// request's URL checked before it is sent (IP literals, allow-listed ports).
pub(crate) fn sdk_http_client(policy: Arc<EgressPolicy>) -> SharedHttpClient {
    use aws_smithy_http_client::tls;
    let inner = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_with_resolver(EgressResolver { policy: policy.clone() });
    SharedHttpClient::new(GuardedClient { inner, policy })
}

#[derive(Debug)]
struct GuardedClient {
    inner: SharedHttpClient,
    policy: Arc<EgressPolicy>,
}

impl HttpClient for GuardedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let inner = self.inner.http_connector(settings, components);
        SharedHttpConnector::new(GuardedConnector { inner, policy: self.policy.clone() })
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Debug)]
struct GuardedConnector {
    inner: SharedHttpConnector,
    policy: Arc<EgressPolicy>,
}

impl HttpConnector for GuardedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        match self.policy.check_str(request.uri()) {
            Ok(()) => self.inner.call(request),
            Err(refused) => HttpConnectorFuture::ready(Err(ConnectorError::user(Box::new(refused)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(allowed: &str) -> EgressPolicy {
        EgressPolicy::new(&allowed.parse().unwrap(), &[])
    }

    fn url_refused(p: &EgressPolicy, url: &str) -> bool {
        p.check_str(url).is_err()
    }

    #[test]
    fn special_purpose_addresses_are_refused() {
        for refused in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.170",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::7f00:1",
            "::8.8.8.8",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::ffff:0:127.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::169.254.169.254",
            "64:ff9b:1::8.8.8.8",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "100::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001::1",
            "2001:2::1",
            "2001:db8::1",
            "3fff::1",
            "5f00::1",
            "4000::1",
        ] {
            assert!(special_purpose(ip(refused)).is_some(), "{refused} was admitted");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "52.216.0.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.0.3.1",
            "198.20.0.1",
            "223.255.255.255",
            "2600:1f18::1",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
        ] {
            assert_eq!(special_purpose(ip(public)), None, "{public} was refused");
        }
        let why = special_purpose(ip("::ffff:127.0.0.1")).unwrap();
        assert!(why.contains("127.0.0.1") && why.contains("loopback"), "{why}");
    }

    #[test]
    fn urls_with_refused_literals_are_refused_before_any_lookup() {
        let p = policy("");
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:5432/",
            "http://[::ffff:127.0.0.1]:5672/",
            "http://[::ffff:7f00:1]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://0.0.0.0:9000/",
            "http://0/",
            "http://10.1.2.3/",
            "http://[fd00:ec2::254]/",
            "http://[::]/",
            "ftp://8.8.8.8/",
        ] {
            assert!(url_refused(&p, url), "{url} was admitted");
        }
        let err = p.check_str("http://2130706433:6379/x").unwrap_err();
        assert!(err.reason().contains("127.0.0.1:6379") && err.reason().contains("loopback"), "{err}");
        assert!(!url_refused(&p, "https://8.8.8.8/b/k"));
        // Names are decided on what they resolve to.
        assert!(!url_refused(&p, "http://localhost:5432/"));
        assert!(!url_refused(&p, "https://bucket.s3.eu-west-1.amazonaws.com/k"));
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let p = policy("");
        let err = p.admit_resolved("localhost", &[ip("127.0.0.1"), ip("::1")]).unwrap_err();
        assert!(err.reason().contains("localhost") && err.reason().contains("loopback"), "{err}");
        assert!(p.admit_resolved("evil.example", &[ip("169.254.169.254")]).is_err());
        assert!(p.admit_resolved("nothing.example", &[]).is_err());
        // A rebinding answer mixing a public and a private address keeps the public one.
        assert_eq!(
            p.admit_resolved("mixed.example", &[ip("10.0.0.1"), ip("8.8.8.8")]).unwrap(),
            [ip("8.8.8.8")]
        );
    }

    #[test]
    fn allow_list_entries_parse() {
        let a: AllowedEndpoints =
            " 10.0.0.0/8 , 127.0.0.1:9000,[::1]:9000, fd00::/8,[fd00::/16]:443, minio.corp:9000, *.s3.corp, Host.Example. ,"
                .parse()
                .unwrap();
        assert_eq!(a.entries.len(), 8);
        assert_eq!(a.entries[0], Entry { target: Target::Net("10.0.0.0/8".parse().unwrap()), port: None });
        assert_eq!(
            a.entries[1],
            Entry { target: Target::Net("127.0.0.1/32".parse().unwrap()), port: Some(9000) }
        );
        assert_eq!(a.entries[2], Entry { target: Target::Net("::1/128".parse().unwrap()), port: Some(9000) });
        assert_eq!(a.entries[5], Entry { target: Target::Host("minio.corp".into()), port: Some(9000) });
        assert_eq!(a.entries[6], Entry { target: Target::Subdomains("s3.corp".into()), port: None });
        assert_eq!(a.entries[7], Entry { target: Target::Host("host.example".into()), port: None });
        assert!("".parse::<AllowedEndpoints>().unwrap().is_empty());
        for bad in [
            "http://minio:9000",
            "10.0.0.0/33",
            "minio:0",
            "minio:http",
            "[::1",
            "[::1]9000",
            "a b",
            "*.10.0.0.1",
        ] {
            let err = bad.parse::<AllowedEndpoints>().unwrap_err();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn the_allow_list_admits_what_it_names_and_nothing_more() {
        let p = policy("127.0.0.1:9000, 10.0.0.0/8, minio.corp:9000, *.s3.corp");
        assert!(!url_refused(&p, "http://127.0.0.1:9000/b/k"));
        assert!(url_refused(&p, "http://127.0.0.1:9001/b/k"), "another port of the same address");
        assert!(url_refused(&p, "http://127.0.0.2:9000/b/k"));
        assert!(!url_refused(&p, "http://[::ffff:127.0.0.1]:9000/b/k"), "the same address, mapped");
        assert!(!url_refused(&p, "http://10.9.8.7:1234/"));
        assert!(!url_refused(&p, "http://minio.corp:9000/"));
        assert!(url_refused(&p, "http://minio.corp:22/"), "an allow-listed name on another port");
        assert!(!url_refused(&p, "https://b.s3.corp/"));
        // What names resolve to: a port-less CIDR admits, an address with a port does
        // not (the resolver cannot see the port), an allow-listed name keeps all.
        assert_eq!(p.admit_resolved("a.example", &[ip("10.1.1.1")]).unwrap(), [ip("10.1.1.1")]);
        assert!(p.admit_resolved("localhost", &[ip("127.0.0.1")]).is_err());
        assert_eq!(p.admit_resolved("MINIO.corp.", &[ip("192.168.1.5")]).unwrap(), [ip("192.168.1.5")]);
        assert_eq!(p.admit_resolved("x.s3.corp", &[ip("192.168.1.6")]).unwrap(), [ip("192.168.1.6")]);
        assert!(p.admit_resolved("s3.corp", &[ip("192.168.1.6")]).is_err(), "*.x does not name x");
        assert!(p.admit_resolved("evils3.corp", &[ip("192.168.1.6")]).is_err());
    }

    #[test]
    fn operator_endpoints_are_admitted_on_their_port() {
        let p = EgressPolicy::new(
            &AllowedEndpoints::default(),
            &["http://127.0.0.1:5000".into(), "http://localstack:4566/".into(), "not a url".into()],
        );
        assert!(!url_refused(&p, "http://127.0.0.1:5000/"));
        assert!(url_refused(&p, "http://127.0.0.1:5432/"));
        assert!(!url_refused(&p, "http://localstack:4566/b/k"));
        assert!(url_refused(&p, "http://localstack:5432/"));
        assert!(p.admit_resolved("localstack", &[ip("172.17.0.2")]).is_ok());
    }

    #[test]
    fn refusals_are_found_in_error_chains() {
        #[derive(Debug)]
        struct Wrap(Box<dyn StdError + Send + Sync>);
        impl fmt::Display for Wrap {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl StdError for Wrap {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&*self.0)
            }
        }
        let err = Wrap(Box::new(Wrap(Box::new(EgressRefused("no".into())))));
        assert_eq!(refusal_in(&err).map(EgressRefused::reason), Some("no"));
        assert!(refusal_in(&Wrap(Box::new(std::io::Error::other("x")))).is_none());
    }

    #[tokio::test]
    async fn the_sdks_requests_pass_the_policy_literal_or_resolved() {
        use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let http = sdk_http_client(Arc::new(policy("")));
        // The connector's own check (an IP literal), then the resolver's (a name).
        for endpoint in [format!("http://127.0.0.1:{port}"), format!("http://localhost:{port}")] {
            let conf = aws_sdk_sts::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("AKIAEGRESSTEST000000", "secret", None, None, "test"))
                .endpoint_url(&endpoint)
                .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
                .http_client(http.clone())
                .build();
            let err = aws_sdk_sts::Client::from_conf(conf).get_caller_identity().send().await.unwrap_err();
            let err = crate::credentials::classify_sdk_error("sts", err);
            assert_eq!(err.code().as_str(), "endpoint_not_allowed", "{endpoint}: {err}");
            assert!(err.to_string().contains("loopback"), "{err}");
        }
        assert!(listener.accept().is_err(), "a connection reached the listener");
    }
}
