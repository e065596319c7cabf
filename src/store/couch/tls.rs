//! TLS to CouchDB: every HTTP client of the adapter is built here, with rustls over the system's
//! root store plus the private CA of `KZ_GROUPS_COUCHDB_CA`; and failures below HTTP are said
//! plainly (a certificate problem as one, a refused connection as refused), since reqwest's own
//! message is only "error sending request".
use std::path::Path;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

/// The CA certificates of `KZ_GROUPS_COUCHDB_CA`, trusted besides the system's roots. Loaded
/// and checked once, with the rest of the configuration.
#[derive(Debug, Clone)]
pub struct CouchCa {
    certs: Vec<reqwest::Certificate>,
}

impl CouchCa {
    /// Reads a PEM file of one or more certificates; an unreadable file, a malformed certificate
    /// or a file without any is an error naming the variable.
    pub fn load(path: &Path) -> Result<Self, String> {
        let fail = |why: String| format!("KZ_GROUPS_COUCHDB_CA={}: {why}", path.display());
        let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let mut certs = Vec::new();
        // What the client will do with them, done now: a certificate rustls cannot take as a
        // trust anchor fails here rather than at the first call.
        let mut anchors = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(&pem) {
            let der = der.map_err(|e| fail(format!("not a PEM file of certificates: {e:?}")))?;
            anchors
                .add(der.clone())
                .map_err(|e| fail(format!("certificate {} is unusable: {e}", certs.len() + 1)))?;
            certs.push(
                reqwest::Certificate::from_der(&der)
                    .map_err(|e| fail(format!("certificate {}: {e}", certs.len() + 1)))?,
            );
        }
        if certs.is_empty() {
            return Err(fail(
                "no certificate in it (expected one or more PEM \"BEGIN CERTIFICATE\" blocks)"
                    .into(),
            ));
        }
        Ok(Self { certs })
    }
}

/// A client builder that trusts the system's roots and `ca`: the one TLS setup every client of
/// the adapter starts from.
pub fn client_builder(ca: Option<&CouchCa>) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_native_certs(true);
    ca.into_iter()
        .flat_map(|ca| ca.certs.iter().cloned())
        .fold(builder, reqwest::ClientBuilder::add_root_certificate)
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
            "; its CA is neither among the system's roots nor in KZ_GROUPS_COUCHDB_CA"
        }
        Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
            "; the host in COUCHDB_URL must be one the certificate names"
        }
        _ => "",
    };
    format!("TLS certificate problem with {host}: {e}{hint}")
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
        assert_eq!(CouchCa::load(&one).unwrap().certs.len(), 1);
        let two = write(
            dir.path(),
            "two.pem",
            &format!("{}\n{}", ca_pem(), ca_pem()),
        );
        assert_eq!(CouchCa::load(&two).unwrap().certs.len(), 2);
        assert!(client_builder(Some(&CouchCa::load(&two).unwrap()))
            .build()
            .is_ok());
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
}
