//! Probes and discovery over TLS: a loopback HTTPS origin with a
//! self-signed certificate for `localhost`. Trusted, it is probed and read
//! like any origin; untrusted, every probe is inconclusive with a TLS
//! error, never gone, and discovery reads nothing.

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use origin_watch::probe::{ProbeRules, Prober, Verdict};
use origin_watch::transport::{Direct, Transport};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Serves HTTPS on loopback: 404 for `/gone.png`, a page showing
/// `/found.png` through the optimizer at `/`, 200 for anything else.
async fn https_origin() -> (u16, CertificateDer<'static>) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = CertificateDer::from(key.cert.der().to_vec());
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], private)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: Request<hyper::body::Incoming>| async move {
                        let (status, body) = match req.uri().path() {
                            "/gone.png" => (StatusCode::NOT_FOUND, ""),
                            "/" => (
                                StatusCode::OK,
                                r#"<html><img src="/_next/image?url=%2Ffound.png&amp;w=64"></html>"#,
                            ),
                            _ => (StatusCode::OK, ""),
                        };
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "text/html")
                                .body(Full::new(Bytes::from_static(body.as_bytes())))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, cert)
}

fn rules() -> ProbeRules {
    ProbeRules {
        retries: 0,
        per_host_concurrency: 4,
        ..ProbeRules::default()
    }
}

#[tokio::test]
async fn a_trusted_https_origin_is_probed_like_any_other() {
    let (port, cert) = https_origin().await;
    let prober = Prober::with_transport(Transport::Direct(Direct::new(vec![cert]).unwrap()));
    let gone = prober
        .probe(&format!("https://localhost:{port}/gone.png"), &rules())
        .await;
    assert_eq!(
        (gone.verdict, gone.status),
        (Verdict::Gone, Some(404)),
        "{gone:?}"
    );
    // Twice, so the second rides a pooled TLS connection.
    for _ in 0..2 {
        let present = prober
            .probe(&format!("https://localhost:{port}/hero.png"), &rules())
            .await;
        assert_eq!(present.verdict, Verdict::Present, "{present:?}");
    }
}

#[tokio::test]
async fn an_untrusted_certificate_is_inconclusive_never_gone() {
    let (port, _cert) = https_origin().await;
    let prober = Prober::with_transport(Transport::Direct(Direct::new(Vec::new()).unwrap()));
    let obs = prober
        .probe(&format!("https://localhost:{port}/gone.png"), &rules())
        .await;
    assert_eq!(obs.verdict, Verdict::Inconclusive);
    assert_eq!(obs.status, None);
    let error = obs.error.unwrap();
    assert!(error.contains("tls"), "{error}");
}

/// Discovery goes by the prober's client: what the prober trusts
/// (`ca_file:`), discovery reads; what it does not, discovery reads nothing
/// and says why.
#[tokio::test]
async fn discovery_trusts_what_the_prober_trusts() {
    use origin_watch::config::Config;
    use origin_watch::discover::Discoverer;
    use tokio_util::sync::CancellationToken;

    let (port, cert) = https_origin().await;
    let yaml = format!(
        "watches:\n  - name: site\n    project: p\n    origin: 'https://localhost:{port}'\n    \
         discover: {{ pages: [/], sitemaps: [] }}\n"
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let watch = &config.watches()[0];
    let trusting = Prober::trusting(&origin_watch::tls::Trust::with_certs(vec![cert])).unwrap();
    let found = Discoverer::new(Arc::new(trusting))
        .discover_watch(watch, &CancellationToken::new())
        .await
        .unwrap();
    assert!(found.complete(), "{:?}", found.errors);
    let srcs: Vec<&str> = found.sources.iter().map(|f| f.src.as_str()).collect();
    assert_eq!(srcs, ["/found.png"]);

    let untrusting = Prober::with_transport(Transport::Direct(Direct::new(Vec::new()).unwrap()));
    let found = Discoverer::new(Arc::new(untrusting))
        .discover_watch(watch, &CancellationToken::new())
        .await
        .unwrap();
    assert!(found.sources.is_empty());
    assert_eq!(found.errors.len(), 1, "{:?}", found.errors);
    assert!(found.errors[0].contains("tls"), "{:?}", found.errors);
}
