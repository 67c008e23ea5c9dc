//! TLS for `tls` and `https` listeners (taskd(8), TLS): the rustls server
//! configuration built from a listener's PEM files, and the user name a
//! client certificate stands for under mutual TLS.
//!
//! rustls does no I/O of its own, so the event loop drives it like any
//! other connection: bytes from the socket go in, plaintext comes out; no
//! extra thread, no blocking.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::ListenerConfig;
use crate::protocol::Name;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// The server configuration of a `tls` or `https` listener, with its
/// certificates read now: a file that fails to load is an error naming it.
pub fn server_config(l: &ListenerConfig) -> Result<Arc<ServerConfig>, String> {
    let (Some(cert), Some(key)) = (&l.cert, &l.key) else {
        return Err(format!(
            "{} listener {}: cert and key are required",
            l.proto.as_str(),
            l.address
        ));
    };
    let chain = read_certs(cert, "cert")?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("key {}: {e}", key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match &l.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca, "client_ca")? {
                roots
                    .add(c)
                    .map_err(|e| format!("client_ca {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| format!("client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("cert {} and key: {e}", cert.display()))?;
    if l.proto == crate::config::Proto::Https {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Ok(Arc::new(config))
}

/// The user a client certificate stands for: its first DNS or email
/// subject-alternative name, else its common name, when that is a valid
/// user name (taskd(8), TLS).
pub fn certificate_user(cert: &CertificateDer) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok().flatten().and_then(|san| {
        san.value.general_names.iter().find_map(|n| match n {
            GeneralName::DNSName(s) | GeneralName::RFC822Name(s) => Some((*s).to_string()),
            _ => None,
        })
    });
    let name = match san {
        Some(n) => n,
        None => parsed
            .subject()
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string(),
    };
    Name::user(name.as_bytes()).is_some().then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_san_or_the_cn_names_the_user() {
        let mut params = rcgen::CertificateParams::new(vec!["client-1.example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ignored");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(certificate_user(cert.der()).as_deref(), Some("client-1.example"));

        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(certificate_user(cert.der()).as_deref(), Some("alice"));

        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "not a user name");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(certificate_user(cert.der()), None);
    }
}
