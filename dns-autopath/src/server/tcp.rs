//! DNS over TCP (RFC 7766): length-prefixed messages, several per connection, idle timeout.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use super::{
    handler::{DnsHandler, Transport},
    stats::bump,
};

/// Accepts connections until the task is aborted.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    handler: DnsHandler,
    idle_timeout: Duration,
    max_connections: usize,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            // Over the limit: close at once rather than queue.
            bump(&handler.resolver.counters.dropped);
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, peer.ip(), &handler, idle_timeout).await {
                tracing::debug!(%peer, error = %e, "tcp connection ended");
            }
            drop(permit);
        });
    }
}

async fn serve(
    mut stream: TcpStream,
    client: std::net::IpAddr,
    handler: &DnsHandler,
    idle_timeout: Duration,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut request = Vec::new();
    loop {
        let len = match tokio::time::timeout(idle_timeout, stream.read_u16()).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(len)) => usize::from(len),
        };
        request.resize(len, 0);
        tokio::time::timeout(idle_timeout, stream.read_exact(&mut request))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        bump(&handler.resolver.counters.tcp_queries);
        let Some(out) = handler.answer(&request, client, Transport::Tcp).await else {
            return Ok(());
        };
        let len = u16::try_from(out.len()).map_err(std::io::Error::other)?;
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&out);
        stream.write_all(&framed).await?;
    }
}
