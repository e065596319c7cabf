//! TLS to CouchDB: every HTTP client of the adapter is built here, with rustls over the system's
//! root store plus `KZ_GROUPS_COUCHDB_CA`, whose CA certificates are trusted as issuers and whose
//! self-signed certificates are also trusted as themselves (pinned); and failures below HTTP are
//! said plainly (a certificate problem as one, a refused connection as refused), since reqwest's
//! own message is only "error sending request".
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

/// The certificates of `KZ_GROUPS_COUCHDB_CA`, trusted besides the system's roots. Loaded and
/// checked once, with the rest of the configuration.
#[derive(Debug, Clone)]
pub struct CouchCa {
    /// Trust anchors: every certificate of the file, since any may be the CA of the server's
    /// chain (a private CA is itself a self-signed certificate).
    anchors: Vec<CertificateDer<'static>>,
    /// The self-signed ones, also trusted as the server's own certificate. CouchDB's docs make
    /// one with `openssl req -x509` (`CA:TRUE`) or `openssl x509 -req -signkey` (version 1),
    /// and webpki refuses either as a server's certificate (`CaUsedAsEndEntity`,
    /// `UnsupportedCertVersion`) where curl and Erlang's ssl take it.
    pins: Vec<Pin>,
}

impl CouchCa {
    /// Reads a PEM file of one or more certificates; an unreadable file, a malformed certificate,
    /// one usable neither as a CA nor as a pinned certificate, or a file without any is an error
    /// naming the variable.
    pub fn load(path: &Path) -> Result<Self, String> {
        let fail = |why: String| format!("KZ_GROUPS_COUCHDB_CA={}: {why}", path.display());
        let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let (mut anchors, mut pins) = (Vec::new(), Vec::new());
        for (n, der) in CertificateDer::pem_slice_iter(&pem).enumerate() {
            let der = der.map_err(|e| fail(format!("not a PEM file of certificates: {e:?}")))?;
            // What the client will do with it, done now: a certificate rustls cannot take as a
            // trust anchor, and that is no self-signed certificate either, fails here rather
            // than at the first call.
            let anchor = rustls::RootCertStore::empty().add(der.clone());
            let pin = Pin::of(&der);
            if let (Err(e), None) = (&anchor, &pin) {
                return Err(fail(format!("certificate {} is unusable: {e}", n + 1)));
            }
            pins.extend(pin);
            if anchor.is_ok() {
                anchors.push(der);
            }
        }
        if anchors.is_empty() && pins.is_empty() {
            return Err(fail(
                "no certificate in it (expected one or more PEM \"BEGIN CERTIFICATE\" blocks)"
                    .into(),
            ));
        }
        Ok(Self { anchors, pins })
    }
}

/// A self-signed certificate trusted as itself: the server must present exactly it, within its
/// dates, and it must name the host of `COUCHDB_URL` if it names hosts at all.
#[derive(Debug, Clone)]
struct Pin {
    der: CertificateDer<'static>,
    /// Its public key, which the server's handshake signature is checked with.
    spki: SubjectPublicKeyInfoDer<'static>,
    not_before: UnixTime,
    not_after: UnixTime,
    names: Vec<HostName>,
}

impl Pin {
    /// The pin a certificate makes, if it is self-signed: issued by its own subject, and signed
    /// by its own key.
    fn of(der: &CertificateDer<'_>) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        if !self_signed(&cert) {
            return None;
        }
        let at = |t: &x509_parser::time::ASN1Time| {
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                u64::try_from(t.timestamp()).unwrap_or(0),
            ))
        };
        Some(Self {
            der: der.clone().into_owned(),
            spki: SubjectPublicKeyInfoDer::from(cert.public_key().raw.to_vec()),
            not_before: at(&cert.validity().not_before),
            not_after: at(&cert.validity().not_after),
            // A certificate whose subjectAltName cannot be read names hosts nobody can tell.
            names: hosts_named(&cert)?,
        })
    }

    /// What webpki checks of a certificate it chains, less the chain: the dates and the name.
    fn check(&self, server: &ServerName<'_>, now: UnixTime) -> Result<(), CertificateError> {
        if now.as_secs() < self.not_before.as_secs() {
            return Err(CertificateError::NotValidYetContext {
                time: now,
                not_before: self.not_before,
            });
        }
        if now.as_secs() > self.not_after.as_secs() {
            return Err(CertificateError::ExpiredContext {
                time: now,
                not_after: self.not_after,
            });
        }
        if !self.names.is_empty() && !names_host(&self.names, server) {
            return Err(CertificateError::NotValidForNameContext {
                expected: server.to_owned(),
                presented: self.names.iter().map(HostName::to_string).collect(),
            });
        }
        Ok(())
    }
}

/// Issued by its own subject and signed with its own key (a name alone can be copied).
fn self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.issuer().as_raw() == cert.subject().as_raw() && cert.verify_signature(None).is_ok()
}

/// A host a certificate is for: a DNS name (lower case, maybe `*.` first) or an IP address.
#[derive(Debug, Clone, PartialEq)]
enum HostName {
    Dns(String),
    Ip(IpAddr),
}

impl std::fmt::Display for HostName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// The hosts a certificate names, as curl and Erlang's ssl read them: the DNS names and IP
/// addresses of its subjectAltName when it has any, otherwise its subject's common name when
/// that is a host name or an IP address (a version 1 certificate has no extensions at all).
/// None if its subjectAltName is malformed.
fn hosts_named(cert: &X509Certificate<'_>) -> Option<Vec<HostName>> {
    let alt: Vec<HostName> = cert
        .subject_alternative_name()
        .ok()?
        .into_iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(HostName::Dns(dns.to_ascii_lowercase())),
            GeneralName::IPAddress(&[a, b, c, d]) => Some(HostName::Ip(IpAddr::from([a, b, c, d]))),
            GeneralName::IPAddress(bytes) => <[u8; 16]>::try_from(*bytes)
                .ok()
                .map(|v6| HostName::Ip(IpAddr::from(v6))),
            _ => None,
        })
        .collect();
    if !alt.is_empty() {
        return Some(alt);
    }
    Some(
        cert.subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .filter_map(host_like)
            .collect(),
    )
}

/// A common name read as a host, if it is one: an IP address, or dot-separated labels of
/// letters, digits and hyphens (the first maybe `*`). "CouchDB test" names no host.
fn host_like(cn: &str) -> Option<HostName> {
    if let Ok(ip) = cn.parse::<IpAddr>() {
        return Some(HostName::Ip(ip));
    }
    let name = cn.strip_suffix('.').unwrap_or(cn);
    let labels_ok = name.split('.').enumerate().all(|(i, label)| {
        (i == 0 && label == "*")
            || (!label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    });
    (labels_ok && name != "*").then(|| HostName::Dns(name.to_ascii_lowercase()))
}

/// Whether `names` include `server`: an IP address only as an IP address; a DNS name exactly or
/// by a wildcard, case-insensitive.
fn names_host(names: &[HostName], server: &ServerName<'_>) -> bool {
    match server {
        ServerName::IpAddress(ip) => {
            let ip = IpAddr::from(*ip);
            names.contains(&HostName::Ip(ip))
        }
        ServerName::DnsName(dns) => names.iter().any(|name| match name {
            HostName::Dns(pattern) => dns_matches(pattern, dns.as_ref()),
            HostName::Ip(_) => false,
        }),
        _ => false,
    }
}

/// RFC 6125 6.4.3: a `*` may stand for the whole leftmost label, and for one label only, and not
/// right above a top-level domain (`*.com` matches nothing). `pattern` is in lower case.
fn dns_matches(pattern: &str, host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let pattern = pattern.strip_suffix('.').unwrap_or(pattern);
    match pattern.strip_prefix("*.") {
        Some(parent) => {
            parent.contains('.')
                && host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent)
        }
        None => host == pattern,
    }
}

/// The server's certificate is trusted if it is one pinned in `KZ_GROUPS_COUCHDB_CA` and passes
/// the pin's checks, or else if webpki chains it to the system's roots or a CA of the file, as
/// reqwest's own verifier would.
#[derive(Debug)]
struct PinsThenWebPki {
    pins: Vec<Pin>,
    /// None when there is no root at all (no system store, no CA in the file): only pins are
    /// trusted then, and any other certificate has an unknown issuer.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinsThenWebPki {
    fn pin(&self, cert: &CertificateDer<'_>) -> Option<&Pin> {
        self.pins.iter().find(|pin| pin.der == *cert)
    }
}

impl ServerCertVerifier for PinsThenWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(pin) = self.pin(end_entity) {
            pin.check(server_name, now)?;
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(webpki) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            None => Err(CertificateError::UnknownIssuer.into()),
        }
    }

    // A pin's handshake signature is checked with its bare public key: rustls' own check reads
    // the certificate as webpki does, which refuses a version 1 certificate.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.pin(cert) {
            Some(pin) => verify_tls12_signature_with_key(message, &pin.spki, dss, &self.algorithms),
            None => rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.pin(cert) {
            Some(pin) => rustls::crypto::verify_tls13_signature_with_raw_key(
                message,
                &pin.spki,
                dss,
                &self.algorithms,
            ),
            None => rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// rustls' `verify_tls12_signature` over a public key rather than a certificate (rustls has
/// that for TLS 1.3 only): each algorithm of the scheme is tried until one fits the key.
fn verify_tls12_signature_with_key(
    message: &[u8],
    spki: &SubjectPublicKeyInfoDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let key =
        webpki::RawPublicKeyEntity::try_from(spki).map_err(|_| CertificateError::BadEncoding)?;
    let candidates = algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map(|(_, candidates)| *candidates)
        .ok_or(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)?;
    for alg in candidates {
        match key.verify_signature(*alg, message, dss.signature()) {
            Ok(()) => return Ok(HandshakeSignatureValid::assertion()),
            Err(webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)) => continue,
            Err(_) => return Err(CertificateError::BadSignature.into()),
        }
    }
    Err(CertificateError::BadSignature.into())
}

/// The TLS configuration every client of the adapter uses: TLS 1.2 and 1.3 with ring, the
/// system's roots (as reqwest loads them: `SSL_CERT_FILE` and `SSL_CERT_DIR` honoured) and
/// `ca`, HTTP/1.1 offered by ALPN, as reqwest configures rustls itself. Built once per client
/// set, since it reads the system's store.
pub fn client_config(ca: Option<&CouchCa>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    // A system store often holds a few certificates rustls cannot read; reqwest skips them, and
    // refuses only a store it can read nothing of.
    let (read, unreadable) = roots.add_parsable_certificates(system.certs);
    if read == 0 && unreadable > 0 {
        return Err(format!(
            "none of the system's {unreadable} root certificates is readable{}",
            system
                .errors
                .iter()
                .map(|e| format!("; {e}"))
                .collect::<String>()
        ));
    }
    let (anchors, pins) = ca.map_or((&[][..], Vec::new()), |ca| {
        (&ca.anchors[..], ca.pins.clone())
    });
    for anchor in anchors {
        roots
            .add(anchor.clone())
            .map_err(|e| format!("KZ_GROUPS_COUCHDB_CA: {e}"))?;
    }
    let webpki = (!roots.is_empty())
        .then(|| {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()
        })
        .transpose()
        .map_err(|e| format!("cannot build the TLS verifier: {e}"))?;
    let verifier = PinsThenWebPki {
        pins,
        webpki,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| format!("cannot configure TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // reqwest sets ALPN on the configurations it builds, not on one handed to it; ours speaks
    // HTTP/1.1 only (no `http2` feature).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client builder over `tls`: the one TLS setup every client of the adapter starts from.
pub fn client_builder(tls: &rustls::ClientConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder().use_preconfigured_tls(tls.clone())
}

/// Why a call failed before CouchDB answered, from the error's chain of causes: a TLS failure
/// names the certificate problem and what to check, a refused connection says so, a timeout
/// says so; anything else is the whole chain.
pub fn explain(e: &reqwest::Error) -> String {
    let host = e.url().map_or_else(
        || "CouchDB".to_owned(),
        |url| {
            let host = url.host_str().unwrap_or("?");
            match url.port_or_known_default() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            }
        },
    );
    let https = e.url().is_some_and(|url| url.scheme() == "https");
    let mut chain = Vec::<String>::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return tls_problem(tls, &host);
        }
        let io = err.downcast_ref::<std::io::Error>();
        match io.map(std::io::Error::kind) {
            Some(std::io::ErrorKind::ConnectionRefused) => {
                return format!("connection refused by {host}")
            }
            // Past the TCP connection, before any answer: the server hung up on the ClientHello
            // (tokio-rustls' "tls handshake eof", or a reset).
            Some(std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset)
                if e.is_connect() && https =>
            {
                return format!(
                    "TLS handshake with {host} failed: the server closed the connection (does \
                     it serve https on that port?)"
                )
            }
            _ => {}
        }
        let text = err.to_string();
        if !chain.iter().any(|seen| seen.contains(&text)) {
            chain.push(text);
        }
        // An io::Error's source() is the source of the error it wraps, skipping that error
        // (where rustls' is, wrapped once by rustls and again by the connector): unwrap it.
        cause = match io {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    if e.is_timeout() {
        return format!("no answer from {host} in time ({})", chain.join(": "));
    }
    chain.join(": ")
}

fn tls_problem(e: &rustls::Error, host: &str) -> String {
    use rustls::CertificateError as Cert;
    let cert = match e {
        rustls::Error::InvalidCertificate(cert) => cert,
        rustls::Error::InvalidMessage(_) => {
            return format!(
                "TLS handshake with {host} failed: {e} (does it serve https on that port?)"
            )
        }
        _ => return format!("TLS handshake with {host} failed: {e}"),
    };
    let hint = match cert {
        Cert::UnknownIssuer => {
            "; its CA is neither among the system's roots nor in KZ_GROUPS_COUCHDB_CA".to_owned()
        }
        Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
            "; the host in COUCHDB_URL must be one the certificate names".to_owned()
        }
        Cert::ExpiredContext { not_after, .. } => format!(
            "; it expired at {}: the server needs a new one (and KZ_GROUPS_COUCHDB_CA too, if \
             it holds that self-signed certificate)",
            utc(*not_after)
        ),
        Cert::NotValidYetContext { not_before, .. } => format!(
            "; it is valid from {} on: check the clocks of this machine and the server",
            utc(*not_before)
        ),
        _ => String::new(),
    };
    format!("TLS certificate problem with {host}: {e}{hint}")
}

/// A certificate's time as people read it (rustls says seconds since 1970).
fn utc(t: rustls::pki_types::UnixTime) -> String {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{} (UNIX)", t.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_ca_file_holds_one_or_more_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let one = write(dir.path(), "one.pem", &ca_pem());
        assert_eq!(CouchCa::load(&one).unwrap().anchors.len(), 1);
        let two = write(
            dir.path(),
            "two.pem",
            &format!("{}\n{}", ca_pem(), ca_pem()),
        );
        assert_eq!(CouchCa::load(&two).unwrap().anchors.len(), 2);
        let tls = client_config(Some(&CouchCa::load(&two).unwrap())).unwrap();
        assert!(client_builder(&tls).build().is_ok());
    }

    #[test]
    fn a_ca_file_without_a_usable_certificate_is_refused_naming_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = write(dir.path(), "empty.pem", "");
        let text = write(dir.path(), "text.pem", "hello\n");
        let garbled = write(
            dir.path(),
            "garbled.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        for (path, why) in [
            (&missing, "cannot read"),
            (&empty, "no certificate"),
            (&text, "no certificate"),
            (&garbled, "unusable"),
        ] {
            let e = CouchCa::load(path).unwrap_err();
            assert!(e.starts_with("KZ_GROUPS_COUCHDB_CA="), "{e}");
            assert!(e.contains(why), "{e}");
        }
    }

    /// A certificate of `params`, self-signed, with its DER.
    fn self_signed_der(params: rcgen::CertificateParams) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn params(names: &[&str], cn: &str) -> rcgen::CertificateParams {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
    }

    fn named(der: &CertificateDer<'_>) -> Vec<String> {
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        hosts_named(&cert)
            .unwrap()
            .iter()
            .map(HostName::to_string)
            .collect()
    }

    fn server(name: &str) -> ServerName<'static> {
        ServerName::try_from(name.to_owned()).unwrap()
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
    }

    #[test]
    fn a_self_signed_certificate_is_pinned_and_a_certificate_a_ca_signed_is_not() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = params(&[], "Test CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let ca_der = ca_cert.der().clone();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = params(&["localhost"], "localhost")
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        // Issued by a subject of its own name, but signed by the CA's key: not self-signed.
        let impostor = params(&[], "Test CA")
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let self_signed =
            |der: &CertificateDer<'_>| self_signed(&X509Certificate::from_der(der).unwrap().1);
        assert!(self_signed(&ca_der));
        assert!(!self_signed(leaf.der()));
        assert!(!self_signed(impostor.der()));

        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "both.pem",
            &format!("{}{}", ca_cert.pem(), leaf.pem()),
        );
        let ca = CouchCa::load(&file).unwrap();
        assert_eq!(ca.anchors.len(), 2, "both remain trust anchors, as before");
        assert_eq!(ca.pins.len(), 1);
        assert_eq!(ca.pins[0].der, ca_der);
    }

    #[test]
    fn the_subject_alternative_name_says_the_hosts_and_the_common_name_only_without_one() {
        let both = self_signed_der(params(&["couch.example", "127.0.0.1"], "other.example"));
        assert_eq!(named(&both), ["couch.example", "127.0.0.1"]);
        let cn_host = self_signed_der(params(&[], "Couch.Example"));
        assert_eq!(named(&cn_host), ["couch.example"]);
        let cn_ip = self_signed_der(params(&[], "127.0.0.1"));
        assert_eq!(named(&cn_ip), ["127.0.0.1"]);
        let cn_wildcard = self_signed_der(params(&[], "*.couch.example"));
        assert_eq!(named(&cn_wildcard), ["*.couch.example"]);
        for not_a_host in ["CouchDB test", "*", "couch..example", "couch_db", ""] {
            let der = self_signed_der(params(&[], not_a_host));
            assert!(
                named(&der).is_empty(),
                "{not_a_host:?} named {:?}",
                named(&der)
            );
        }
    }

    #[test]
    fn a_host_matches_its_name_or_a_wildcard_for_its_first_label_whatever_the_case() {
        let names = [
            HostName::Dns("couch.example".into()),
            HostName::Dns("*.db.example".into()),
            HostName::Ip("127.0.0.1".parse().unwrap()),
            HostName::Ip("::1".parse().unwrap()),
        ];
        for host in [
            "couch.example",
            "COUCH.Example",
            "couch.example.",
            "a.db.example",
            "A.DB.EXAMPLE",
            "127.0.0.1",
            "::1",
        ] {
            assert!(names_host(&names, &server(host)), "{host} is named");
        }
        for host in [
            "other.example",
            "db.example",
            "a.b.db.example",
            "xcouch.example",
            "127.0.0.2",
            "::2",
            "localhost",
        ] {
            assert!(!names_host(&names, &server(host)), "{host} is not named");
        }
        assert!(
            !dns_matches("*.example", "couch.example"),
            "not above a TLD"
        );
        // An IP address in a DNS name is no IP address.
        let dns_ip = [HostName::Dns("127.0.0.1".into())];
        assert!(!names_host(&dns_ip, &server("127.0.0.1")));
    }

    #[test]
    fn a_pin_is_checked_for_its_dates_and_for_the_host_where_it_names_hosts() {
        let mut valid = params(&["localhost"], "localhost");
        valid.not_before = rcgen::date_time_ymd(2020, 1, 1);
        valid.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let pin = Pin::of(&self_signed_der(valid)).unwrap();
        let (before, during, after) = (1_500_000_000, 1_700_000_000, 1_950_000_000);
        assert!(pin.check(&server("localhost"), at(during)).is_ok());
        assert!(matches!(
            pin.check(&server("localhost"), at(before)),
            Err(CertificateError::NotValidYetContext { .. })
        ));
        assert!(matches!(
            pin.check(&server("localhost"), at(after)),
            Err(CertificateError::ExpiredContext { .. })
        ));
        let Err(CertificateError::NotValidForNameContext { presented, .. }) =
            pin.check(&server("127.0.0.1"), at(during))
        else {
            panic!("127.0.0.1 is not named");
        };
        assert_eq!(presented, ["localhost"]);
        let nameless = Pin::of(&self_signed_der(params(&[], "CouchDB test"))).unwrap();
        assert!(nameless
            .check(&server("couch.example"), UnixTime::now())
            .is_ok());
    }

    #[test]
    fn an_expired_certificate_is_said_with_its_date() {
        let e = rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: at(1_700_000_000),
            not_after: at(1_600_000_000),
        });
        let said = tls_problem(&e, "localhost:6984");
        assert!(
            said.starts_with("TLS certificate problem with localhost:6984"),
            "{said}"
        );
        assert!(said.contains("expired at 2020-09-13T12:26:40Z"), "{said}");
    }
}
