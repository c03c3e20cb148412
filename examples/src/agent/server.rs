//! The agent's unix socket: mode 0600 in a 0700 directory (only root talks to the agent, as
//! with the AWS VPC CNI's hardened socket), one versioned JSON request and one reply per
//! connection, a bound on how long the request may take to arrive (`read_timeout`) and a
//! deadline on serving it (the `ADD` wait the plugin asked for, 10 s for the rest).

use std::{
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{net::UnixListener, sync::watch, task::JoinSet};

use super::Agent;
use crate::protocol::{
    ApiError, ApiErrorKind, PROTOCOL_VERSION, Request, RequestEnvelope, ResponseEnvelope,
    read_message, write_message,
};

/// The deadline of requests that do not carry their own.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// Binds the socket at `path`: creates its directory (0700), replaces a stale socket (one
/// nothing listens on), refuses to replace anything else, and sets mode 0600.
///
/// # Errors
/// When another agent listens there, the path is not a socket, or binding fails.
pub async fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another agent listens on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves `agent` on `listener` until `stop` turns true; then lets requests in flight finish
/// within `grace` and removes the socket file at `path`.
pub async fn serve(
    agent: Arc<Agent>,
    listener: UnixListener,
    path: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let read_timeout = agent.config().read_timeout;
    let grace = agent.config().shutdown_grace;
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let agent = Arc::clone(&agent);
                    tasks.spawn(async move {
                        if let Err(e) = connection(&agent, stream, read_timeout).await {
                            tracing::debug!(error = %e, "connection");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = stop.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    std::fs::remove_file(&path).ok();
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "requests still running at the end of the grace period"
        );
        tasks.abort_all();
    }
}

async fn connection(
    agent: &Agent,
    mut stream: tokio::net::UnixStream,
    read_timeout: Duration,
) -> io::Result<()> {
    let (read, mut write) = stream.split();
    let envelope: Option<RequestEnvelope> =
        match tokio::time::timeout(read_timeout, read_message(read)).await {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => {
                let reply = ResponseEnvelope::new(
                    0,
                    Err(ApiError::new(
                        ApiErrorKind::InvalidRequest,
                        format!("unreadable request: {e}"),
                    )),
                );
                return write_message(&mut write, &reply).await;
            }
            Err(_) => return Ok(()),
        };
    let Some(envelope) = envelope else {
        return Ok(());
    };
    let id = envelope.id;
    if envelope.version != PROTOCOL_VERSION {
        let reply = ResponseEnvelope::new(
            id,
            Err(ApiError::new(
                ApiErrorKind::Version,
                format!(
                    "this agent speaks protocol version {PROTOCOL_VERSION}, the request {}",
                    envelope.version
                ),
            )),
        );
        return write_message(&mut write, &reply).await;
    }
    let op = envelope.request.op();
    let deadline = match &envelope.request {
        // The pool enforces the wait itself; the link and records get a little more.
        Request::Allocate(a) => Duration::from_millis(a.timeout_ms) + Duration::from_secs(5),
        // The same, and the wiring.
        Request::Add(a) => {
            Duration::from_millis(a.allocate.timeout_ms) + Duration::from_secs(5) + DEFAULT_DEADLINE
        }
        // GC tears down every stale attachment.
        Request::Gc { .. } => DEFAULT_DEADLINE * 6,
        _ => DEFAULT_DEADLINE,
    };
    let started = std::time::Instant::now();
    let result = match tokio::time::timeout(deadline, agent.handle(envelope.request)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            ApiErrorKind::Unavailable,
            format!("`{op}` did not finish within {deadline:?}"),
        )),
    };
    match &result {
        Ok(_) => tracing::debug!(op, id, took = ?started.elapsed(), "served"),
        Err(e) => tracing::info!(op, id, kind = ?e.kind, error = %e.message, "refused"),
    }
    write_message(&mut write, &ResponseEnvelope::new(id, result)).await
}
