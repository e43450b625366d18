//! Bounds on the xDS port, so that many clients (a misbehaving fleet, or
//! someone with a stolen token) cost bounded memory and never stop real
//! Envoys getting changes: at most `max_connections` connections at once
//! (more are closed as soon as they are accepted), at most
//! [`MAX_STREAMS_PER_CONNECTION`] streams on each (HTTP/2's
//! `SETTINGS_MAX_CONCURRENT_STREAMS`; an Envoy uses one), and requests of
//! at most `server::MAX_REQUEST_BYTES`. A failed accept (out of file
//! descriptors) pauses the accept loop instead of ending the server.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

/// Streams one xDS connection may carry at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// An accepted connection holding one of the bounded slots until it closes.
pub struct Bounded {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

/// Accepted connections, at most `max_connections` open at once.
pub fn bounded(
    listener: TcpListener,
    max_connections: usize,
) -> impl Stream<Item = io::Result<Bounded>> {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    futures_util::stream::unfold((listener, slots), move |(listener, slots)| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let _ = stream.set_nodelay(true);
                        let bounded = Bounded {
                            stream,
                            _slot: slot,
                        };
                        return Some((Ok(bounded), (listener, slots)));
                    }
                    Err(_) => {
                        debug!(
                            limit = max_connections,
                            "xDS connection limit reached; closing a new connection"
                        );
                    }
                },
                Err(e) => {
                    warn!(error = %e, "cannot accept an xDS connection; pausing");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

impl Connected for Bounded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Bounded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
