//! HTTPS without verifying the server's certificate: Argo's web provider
//! `insecure: true` (self-signed endpoints in test clusters). Used only for
//! a request whose metric asks for it (the SDK's `insecure` flag, carried
//! to the host in [`INSECURE_TLS_HEADER`], which never leaves the host)
//! and whose provider's registration allows it (`http.allowInsecure`, off
//! by default). Everything else about the request is as for any other:
//! the allow-list, the timeouts clamped to the call's deadline, the capped
//! body.

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

/// The request header by which a guest asks for an unverified TLS
/// connection; the host removes it before the request is sent.
pub const INSECURE_TLS_HEADER: &str = "weir-insecure-tls";

/// Accepts any certificate, but still checks the handshake's signatures
/// (the connection is encrypted, only the peer is not authenticated).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client_config() -> Result<rustls::ClientConfig, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|_| HttpError::TlsProtocolError)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    Ok(config)
}

/// The name TLS is spoken to: an IP address, or the host name without its port.
fn server_name(host: &str) -> Result<ServerName<'static>, HttpError> {
    let host = host.trim_matches(['[', ']']);
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    ServerName::try_from(host.to_string()).map_err(|_| HttpError::HttpRequestUriInvalid)
}

/// A response body whose frames must come within `timeout` of each other.
struct TimedBody {
    inner: hyper::body::Incoming,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + self.timeout;
                self.sleep.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(HttpError::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// A future plus the connection that must be driven while it runs.
type Io = Pin<Box<dyn Future<Output = Result<(), HttpError>> + Send>>;

/// Sends `request` (an `https://` URL) over TLS without verifying the
/// server's certificate, within `options`' timeouts (each set: the hooks
/// clamp them to the call's deadline). Returns the response and the
/// connection's I/O, as wasmtime's default sender does.
pub async fn send(
    mut request: http::Request<WasiBody>,
    options: RequestOptions,
) -> Result<(http::Response<WasiBody>, Io), HttpError> {
    let ten_minutes = Duration::from_secs(600);
    let connect_timeout = options.connect_timeout.unwrap_or(ten_minutes);
    let first_byte_timeout = options.first_byte_timeout.unwrap_or(ten_minutes);
    let between_bytes_timeout = options
        .between_bytes_timeout
        .unwrap_or(ten_minutes)
        .max(Duration::from_nanos(1));
    let uri = request.uri().clone();
    let host = uri.host().ok_or(HttpError::HttpRequestUriInvalid)?;
    let port = uri.port_u16().unwrap_or(443);
    let address = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let name = server_name(host)?;
    let tcp = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(&address))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Connect)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config()?));
    let tls = tokio::time::timeout(connect_timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Tls)?;
    let (mut sender, connection) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;
    // Origin form on the wire: no scheme or authority.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| HttpError::HttpRequestUriInvalid)?;
    let mut connection: Io = Box::pin(async move { connection.await.map_err(HttpError::from) });
    // Drive the connection while waiting for the response head.
    let mut connection_done = false;
    let response = {
        let send = tokio::time::timeout(first_byte_timeout, sender.send_request(request));
        tokio::pin!(send);
        loop {
            tokio::select! {
                sent = &mut send => {
                    break sent
                        .map_err(|_| HttpError::ConnectionReadTimeout)?
                        .map_err(HttpError::from)?;
                }
                ended = &mut connection, if !connection_done => {
                    ended?;
                    connection_done = true;
                }
            }
        }
    };
    let response = response.map(|incoming| {
        TimedBody {
            inner: incoming,
            timeout: between_bytes_timeout,
            sleep: Box::pin(tokio::time::sleep(between_bytes_timeout)),
        }
        .boxed_unsync()
    });
    // A finished connection must not be polled again.
    let io: Io = if connection_done {
        Box::pin(async { Ok(()) })
    } else {
        connection
    };
    Ok((response, io))
}
