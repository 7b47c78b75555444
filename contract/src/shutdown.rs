//! The signal every service waits on: SIGTERM (Kubernetes) or Ctrl-C (a terminal).

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received, draining");
}

/// A stop flag every part of a service can watch: it turns `true` once `signal` resolves.
pub fn flag(
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        signal.await;
        let _ = tx.send(true);
    });
    rx
}

/// Resolves when the flag turns `true` (or its sender is gone).
pub async fn stopped(mut flag: tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}

/// Serve `router` until the flag turns, then let in-flight requests finish for at most
/// `grace` before returning.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: tokio::sync::watch::Receiver<bool>,
    grace: std::time::Duration,
) -> std::io::Result<()> {
    let server = axum::serve(listener, router).with_graceful_shutdown(stopped(stop.clone()));
    tokio::select! {
        result = std::future::IntoFuture::into_future(server) => result,
        () = async {
            stopped(stop).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over; closing the requests still in flight");
            Ok(())
        }
    }
}
