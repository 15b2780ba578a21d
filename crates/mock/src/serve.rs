//! Serving a router on a tokio task: bound before the state is built (the state needs its base
//! URL), stopped gracefully by `shutdown`, aborted when dropped. Shared by the mock IdP and the
//! mock login app.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::MockError;

/// How long `shutdown` waits for open connections before aborting the server.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A bound listener, not yet serving.
pub(crate) struct Bound {
    listener: TcpListener,
    pub addr: SocketAddr,
    /// `http://HOST:PORT`, with an unspecified address shown as loopback.
    pub base_url: String,
}

/// Binds `listen`.
pub(crate) async fn bind(listen: SocketAddr) -> Result<Bound, MockError> {
    let bind_error = |source| MockError::Bind {
        addr: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok(Bound {
        listener,
        addr,
        base_url: format!("http://{}", reachable(addr)),
    })
}

/// A router being served.
#[derive(Debug)]
pub(crate) struct Served {
    pub addr: SocketAddr,
    pub base_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Bound {
    /// Serves `router` on a tokio task.
    pub(crate) fn serve(self, router: Router) -> Served {
        let (stop, stopped) = oneshot::channel::<()>();
        let listener = self.listener;
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Served {
            addr: self.addr,
            base_url: self.base_url,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

impl Served {
    /// Stops accepting, lets open connections finish (at most 5 s), then stops.
    pub(crate) async fn shutdown(mut self) -> Result<(), MockError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(result)) => result.map_err(MockError::Serve),
            Ok(Err(join)) => Err(MockError::Task(join)),
            Err(_elapsed) => {
                task.abort();
                Ok(())
            }
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The address a client should dial for a listener bound to `addr`.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}
