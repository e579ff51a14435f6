//! Full TLS 1.3 handshakes as fast as a server takes them, for `bench/run`:
//! `CONCURRENCY` tasks each connect, complete a handshake (X25519, no
//! resumption: every one is a full handshake), send one HTTP/1.1 request,
//! read the answer's head and close, for `SECONDS`; prints the handshakes
//! completed and their rate. The client is rustls with the same crypto
//! provider as the gateway, so neither side is an OpenSSL client's
//! bottleneck (h2load's saturates its core below what either server does).
//!
//! `cargo run --release --example bench_tls -- ADDR SERVER_NAME SECONDS CONCURRENCY`
//!
//! With `hold N` in place of `SECONDS CONCURRENCY`: opens N keep-alive TLS
//! connections, each through its handshake and one request, prints
//! `holding N` and keeps them open, idle, until killed — for measuring what
//! a server spends per idle connection.
//!
//! The server's certificate is not verified: this measures handshakes, and
//! the benchmark makes its own certificate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Accepts any certificate; signatures are still checked by the provider's
/// algorithms, so the handshake costs what a verifying client's does less
/// the chain walk.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Opens `count` keep-alive connections (64 at a time), one request each,
/// and holds them until the process is killed.
async fn hold_open(
    connector: &TlsConnector,
    server_name: ServerName<'static>,
    addr: &str,
    name: &str,
    count: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use futures_util::stream::{self, StreamExt};
    let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\n\r\n");
    let opened: Vec<_> = stream::iter(0..count)
        .map(|_| {
            let (connector, server_name, request) = (connector.clone(), server_name.clone(), request.clone());
            // Bounded: a connection that stalls is left out rather than
            // holding up the count while the others age.
            let open = async move {
                let tcp = TcpStream::connect(addr).await?;
                let mut tls = connector.connect(server_name, tcp).await?;
                tls.write_all(request.as_bytes()).await?;
                let mut buffer = [0u8; 4096];
                if tls.read(&mut buffer).await? == 0 {
                    return Err(std::io::Error::other("closed before answering"));
                }
                Ok::<_, std::io::Error>(tls)
            };
            async move {
                tokio::time::timeout(std::time::Duration::from_secs(5), open)
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
            }
        })
        .buffer_unordered(64)
        .filter_map(|r| async move { r.ok() })
        .collect()
        .await;
    println!("holding {}", opened.len());
    std::future::pending::<()>().await;
    drop(opened);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(name)) = (args.get(1), args.get(2)) else {
        return Err("usage: bench_tls ADDR SERVER_NAME [SECONDS] [CONCURRENCY]".into());
    };
    let hold = args.get(3).is_some_and(|a| a == "hold");
    let seconds: u64 = if hold {
        0
    } else {
        args.get(3).map_or(Ok(5), |s| s.parse())?
    };
    let concurrency: usize = args.get(4).map_or(Ok(16), |s| s.parse())?;

    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let provider = Arc::new(provider);
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let server_name = ServerName::try_from(name.clone())?;
    let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    if hold {
        return hold_open(&connector, server_name, addr, name, concurrency).await;
    }

    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (connector, server_name, request) = (connector.clone(), server_name.clone(), request.clone());
        let (done, failed, addr) = (done.clone(), failed.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            while Instant::now() < until {
                let attempt = async {
                    let tcp = TcpStream::connect(&addr).await?;
                    tcp.set_nodelay(true)?;
                    let mut tls = connector.connect(server_name.clone(), tcp).await?;
                    tls.write_all(request.as_bytes()).await?;
                    // The head of the answer: the handshake was whole.
                    let n = tls.read(&mut buffer).await?;
                    if n == 0 {
                        return Err(std::io::Error::other("closed before answering"));
                    }
                    Ok::<_, std::io::Error>(())
                };
                match attempt.await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let started = Instant::now();
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    println!(
        "handshakes {done} failed {} seconds {elapsed:.2} rate {:.0}",
        failed.load(Ordering::Relaxed),
        done as f64 / elapsed
    );
    Ok(())
}
