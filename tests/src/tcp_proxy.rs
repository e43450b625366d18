//! A TCP proxy in front of a real server (the test Postgres, say) that a
//! test can cut and restore: an outage of that server as its clients see it
//! (connections reset, new ones refused), without touching the server that
//! other tests share.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::{net::TcpListener, task::JoinSet};

pub struct TcpProxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    /// The accept loop and every connection; aborted on cut.
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl TcpProxy {
    /// Forwards a fresh loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let proxy = Self {
            addr,
            target,
            tasks: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (target, accepting) = (self.target, self.tasks.clone());
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                accepting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
            }
        });
    }

    /// The outage: the port stops listening and every connection drops.
    pub fn cut(&self) {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .abort_all();
    }

    /// The server is back on the same port.
    pub async fn restore(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind");
        self.serve(listener);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
