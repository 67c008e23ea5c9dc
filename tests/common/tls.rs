//! TLS for the tests of `tls` and `https` listeners: a PKI made on the fly
//! with rcgen (a CA per test, server and client certificates), the
//! daemon's listener and files, and rustls clients over a std TcpStream —
//! the line client and the HTTP client over TLS.

use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::client::{LineClient, parse_info};
use super::daemon::Launch;
use super::http::HttpConn;

/// Read and write timeout of every TLS client socket: a missing reply
/// fails the test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- PKI

/// A certificate authority made for one test.
pub struct Ca {
    pub cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key.
pub struct Leaf {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = p.self_signed(&key).expect("CA certificate");
        Ca {
            cert,
            issuer: Issuer::new(p, key),
        }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn sign(&self, p: &CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let cert = p.signed_by(&key, &self.issuer).expect("sign a certificate");
        Leaf { cert, key }
    }

    /// The daemon's certificate: `localhost` and 127.0.0.1, CN `cn`.
    pub fn server(&self, cn: &str) -> Leaf {
        let mut p =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(&p)
    }

    /// A client certificate with these DNS SANs and, if given, a CN.
    pub fn client(&self, dns: &[&str], cn: Option<&str>) -> Leaf {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names = dns
            .iter()
            .map(|d| SanType::DnsName((*d).try_into().expect("a DNS name")))
            .collect();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(&p)
    }
}

impl Leaf {
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

// ---------------------------------------------------------------- daemon

/// One `tls`/`https` listener on `port` with `tls/server.pem` and
/// `tls/server.key`, and `tls/clients-ca.pem` when `mutual`.
pub fn tls_listener(proto: &str, port: u16, mutual: bool) -> String {
    let ca = if mutual {
        "client_ca = \"tls/clients-ca.pem\"\n"
    } else {
        ""
    };
    format!(
        "[[listener]]\nproto = \"{proto}\"\naddress = \"127.0.0.1:{port}\"\n\
         cert = \"tls/server.pem\"\nkey = \"./tls/server.key\"\n{ca}\n"
    )
}

/// The files of a listener made by `tls_listener`.
pub fn server_files(server: &Leaf, clients_ca: Option<&Ca>) -> Vec<(&'static str, String)> {
    let mut files = vec![
        ("tls/server.pem", server.cert_pem()),
        ("tls/server.key", server.key_pem()),
    ];
    if let Some(ca) = clients_ca {
        files.push(("tls/clients-ca.pem", ca.pem()));
    }
    files
}

/// taskd with one `proto` listener (tls or https) on its port, presenting
/// a certificate of `ca`, asking for client certificates of `clients_ca`
/// if given, then `extra`. The files are in `etc/` inside the daemon's
/// folder, with the configuration, and named by relative paths: they must
/// be resolved against the config file's folder, not the working
/// directory.
pub fn launch_tls(proto: &str, ca: &Ca, clients_ca: Option<&Ca>, extra: &str) -> Launch<'static> {
    let server = ca.server("taskd test server");
    let mutual = clients_ca.is_some();
    let proto = proto.to_string();
    let extra = extra.to_string();
    Launch::config(move |port| format!("{}{extra}\n", tls_listener(&proto, port, mutual)))
        .config_in("etc")
        .files(&server_files(&server, clients_ca))
}

// ---------------------------------------------------------------- clients

/// A rustls client configuration trusting `roots`, presenting `cert` if
/// given, with these ALPN protocols and TLS versions (all when empty).
pub fn client_config_with(
    roots: &[CertificateDer<'static>],
    cert: Option<&Leaf>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).expect("a root certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider);
    let builder = if versions.is_empty() {
        builder.with_safe_default_protocol_versions()
    } else {
        builder.with_protocol_versions(versions)
    }
    .expect("protocol versions")
    .with_root_certificates(store);
    let config = match cert {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der()], leaf.key_der())
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

pub fn client_config(roots: &[CertificateDer<'static>], cert: Option<&Leaf>) -> Arc<ClientConfig> {
    client_config_with(roots, cert, &[])
}

pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to `addr` (handshake not yet done: rustls does it on
/// the first read or write).
pub fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsStream {
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    sock.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    sock.set_nodelay(true).expect("nodelay");
    let name = ServerName::try_from("localhost").expect("server name");
    let conn = ClientConnection::new(config, name).expect("client connection");
    StreamOwned::new(conn, sock)
}

/// The line client over TLS.
pub type LineTls = LineClient<TlsStream>;

/// A line client over TLS to `addr` (handshake on the first write or read).
pub fn line_tls(addr: SocketAddr, config: Arc<ClientConfig>) -> LineTls {
    LineClient::over(tls_connect(addr, config))
}

/// The figures of `info`, asked on `c`.
pub fn info_of<S: std::io::Read + std::io::Write>(c: &mut LineClient<S>) -> HashMap<String, String> {
    parse_info(&c.ask("info"))
}

/// The server's certificate (after the handshake).
pub fn server_cert(c: &LineTls) -> CertificateDer<'static> {
    c.get_ref()
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate")
        .clone()
        .into_owned()
}

/// The HTTP client over TLS, asking for `http/1.1` by ALPN.
pub fn https_connect(addr: SocketAddr, config: &ClientConfig) -> HttpConn<TlsStream> {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    HttpConn::over(tls_connect(addr, Arc::new(config)))
}

/// `tls_failures` of `info`.
pub fn tls_failures(info: &HashMap<String, String>) -> u64 {
    info.get("tls_failures")
        .unwrap_or_else(|| panic!("no tls_failures in info: {info:?}"))
        .parse()
        .expect("tls_failures is a number")
}

/// What a client whose handshake the daemon refuses sees: writes a request
/// and reads; Err with what happened, or Ok with what it was (wrongly) sent.
pub fn refused_exchange(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<String, String> {
    let mut c = line_tls(addr, config);
    if let Err(e) = c.try_send("ping") {
        return Err(format!("write: {e}"));
    }
    match c.try_line() {
        Ok(Some(line)) => Ok(line),
        Ok(None) => Ok("<clean EOF>".to_string()),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Reads a raw socket until EOF or a reset; everything read. Panics on a
/// timeout (the daemon did not close the connection).
pub fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("the daemon did not close the connection: {e} (read {got:?})"),
        }
    }
}
