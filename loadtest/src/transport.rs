//! Getting requests to the server: the target URL, TCP and TLS (optionally accepting any
//! certificate, for the self-signed one a fresh server makes), HTTP/1.1 with one connection per
//! device like real phones, or HTTP/2 with several devices multiplexed on one connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::stats::Stats;

/// The ActiveSync endpoint path, when the URL gives none.
pub const ENDPOINT: &str = "/Microsoft-Server-ActiveSync";

/// Where and how to connect; serialisable so a worker process gets the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSpec {
    /// `http://127.0.0.1:8443` or `https://...`, optionally with the endpoint path.
    pub url: String,
    /// Accept any server certificate (HTTPS only).
    pub insecure: bool,
    /// PEM file of the CA (or the self-signed certificate) to trust.
    pub ca_cert: Option<PathBuf>,
    pub http2: bool,
    /// With HTTP/2: devices sharing one connection.
    pub devices_per_conn: usize,
}

/// A resolved target.
pub struct Target {
    pub addr: SocketAddr,
    pub scheme: &'static str,
    pub authority: String,
    pub path: String,
    pub http2: bool,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Target {
    pub async fn resolve(spec: &TargetSpec) -> anyhow::Result<Arc<Target>> {
        let uri: Uri = spec.url.parse().with_context(|| format!("{:?} is not a URL", spec.url))?;
        let scheme = match uri.scheme_str() {
            Some("http") => "http",
            Some("https") => "https",
            _ => bail!("the URL must start with http:// or https:// ({})", spec.url),
        };
        let host = uri.host().context("the URL has no host")?.trim_matches(['[', ']']).to_string();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_else(|| format!("{host}:{port}"));
        let addr = tokio::net::lookup_host((host.as_str(), port)).await?.next().with_context(|| format!("{host} does not resolve"))?;
        let path = match uri.path() {
            "" | "/" => ENDPOINT.to_string(),
            p => p.trim_end_matches('/').to_string(),
        };
        let tls = if scheme == "https" {
            let config = tls_config(spec)?;
            let name = ServerName::try_from(host.clone()).with_context(|| format!("{host} is not a valid TLS server name"))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Arc::new(Target { addr, scheme, authority, path, http2: spec.http2, tls }))
    }

    /// The request URI for `query` (absolute for HTTP/2, origin-form for HTTP/1.1).
    pub fn uri(&self, query: &str) -> String {
        let q = if query.is_empty() { String::new() } else { format!("?{query}") };
        if self.http2 { format!("{}://{}{}{}", self.scheme, self.authority, self.path, q) } else { format!("{}{}", self.path, q) }
    }
}

fn tls_config(spec: &TargetSpec) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let mut config = if spec.insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider))).with_no_client_auth()
    } else if let Some(path) = &spec.ca_cert {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path).with_context(|| format!("cannot read {}", path.display()))? {
            roots.add(cert.with_context(|| format!("bad certificate in {}", path.display()))?)?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        bail!(
            "HTTPS needs --ca-cert FILE (the server's certificate) or --insecure (accept any certificate, for a self-signed test server)"
        );
    };
    config.alpn_protocols = if spec.http2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(config)
}

/// `--insecure`: any certificate is accepted, signatures are still checked.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a request got no HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReqError {
    Connect(String),
    Tls(String),
    Timeout,
    Http(String),
}

impl ReqError {
    pub fn kind(&self) -> &'static str {
        match self {
            ReqError::Connect(_) => "connect",
            ReqError::Tls(_) => "tls",
            ReqError::Timeout => "timeout",
            ReqError::Http(_) => "http",
        }
    }
}

impl std::fmt::Display for ReqError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReqError::Connect(e) => write!(f, "cannot connect: {e}"),
            ReqError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            ReqError::Timeout => write!(f, "timed out"),
            ReqError::Http(e) => write!(f, "HTTP: {e}"),
        }
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }
}

async fn handshake<I>(io: I, http2: bool) -> Result<Conn, ReqError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if http2 {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await.map_err(|e| ReqError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn::H2(sender))
    } else {
        let (sender, conn) = http1::handshake(io).await.map_err(|e| ReqError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn::H1(sender))
    }
}

async fn connect(target: &Target) -> Result<Conn, ReqError> {
    let tcp = TcpStream::connect(target.addr).await.map_err(|e| ReqError::Connect(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    match &target.tls {
        Some((connector, name)) => {
            let tls = connector.connect(name.clone(), tcp).await.map_err(|e| ReqError::Tls(e.to_string()))?;
            handshake(tls, target.http2).await
        }
        None => handshake(tcp, target.http2).await,
    }
}

async fn exchange(conn: &mut Conn, req: Request<Full<Bytes>>) -> Result<Response, ReqError> {
    let http_err = |e: hyper::Error| ReqError::Http(e.to_string());
    let resp = match conn {
        Conn::H1(s) => {
            s.ready().await.map_err(http_err)?;
            s.send_request(req).await.map_err(http_err)?
        }
        Conn::H2(s) => {
            s.ready().await.map_err(http_err)?;
            s.send_request(req).await.map_err(http_err)?
        }
    };
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(http_err)?.to_bytes();
    Ok(Response { status, body })
}

/// An HTTP/2 connection several devices share; re-established when it breaks.
pub struct SharedConn {
    target: Arc<Target>,
    sender: tokio::sync::Mutex<Option<http2::SendRequest<Full<Bytes>>>>,
}

impl SharedConn {
    pub fn new(target: Arc<Target>) -> Arc<SharedConn> {
        Arc::new(SharedConn { target, sender: tokio::sync::Mutex::new(None) })
    }

    async fn sender(&self, stats: &Stats) -> Result<http2::SendRequest<Full<Bytes>>, ReqError> {
        let mut guard = self.sender.lock().await;
        if let Some(s) = guard.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        match connect(&self.target).await? {
            Conn::H2(s) => {
                stats.connected();
                *guard = Some(s.clone());
                Ok(s)
            }
            Conn::H1(_) => Err(ReqError::Http("expected an HTTP/2 connection".into())),
        }
    }
}

/// A device's way to the server.
pub struct Channel(Way);

enum Way {
    /// Its own connection (HTTP/1.1, or HTTP/2 with one device per connection).
    Own { target: Arc<Target>, conn: Option<Conn> },
    /// A stream on a shared HTTP/2 connection.
    Shared(Arc<SharedConn>),
}

impl Channel {
    pub fn own(target: Arc<Target>) -> Channel {
        Channel(Way::Own { target, conn: None })
    }

    pub fn shared(conn: Arc<SharedConn>) -> Channel {
        Channel(Way::Shared(conn))
    }

    pub fn target(&self) -> &Target {
        match &self.0 {
            Way::Own { target, .. } => target,
            Way::Shared(s) => &s.target,
        }
    }

    /// Sends `req` and reads the whole response within `timeout`. A connection that failed or
    /// timed out is dropped, so the next request opens a new one.
    pub async fn send(&mut self, req: Request<Full<Bytes>>, timeout: Duration, stats: &Stats) -> Result<Response, ReqError> {
        match &mut self.0 {
            Way::Own { target, conn } => {
                if conn.as_ref().is_none_or(Conn::is_closed) {
                    *conn = None;
                    let c = tokio::time::timeout(timeout, connect(target)).await.map_err(|_| ReqError::Timeout)??;
                    stats.connected();
                    *conn = Some(c);
                }
                let c = conn.as_mut().expect("connected above");
                let result = match tokio::time::timeout(timeout, exchange(c, req)).await {
                    Ok(r) => r,
                    Err(_) => Err(ReqError::Timeout),
                };
                if result.is_err() {
                    *conn = None;
                }
                result
            }
            Way::Shared(shared) => {
                let sender = tokio::time::timeout(timeout, shared.sender(stats)).await.map_err(|_| ReqError::Timeout)??;
                let mut conn = Conn::H2(sender);
                match tokio::time::timeout(timeout, exchange(&mut conn, req)).await {
                    Ok(r) => r,
                    Err(_) => Err(ReqError::Timeout),
                }
            }
        }
    }

    /// Closes the device's own connection (a shared one stays for the others).
    pub fn close(&mut self) {
        if let Way::Own { conn, .. } = &mut self.0 {
            *conn = None;
        }
    }
}
