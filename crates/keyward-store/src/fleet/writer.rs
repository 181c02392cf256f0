//! The writer and its pending queue: local transitions written in order, kept while
//! Redis is unreachable and written, merged by version, when it returns.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::health::{SinkError, Transition};
use tokio::sync::mpsc;

use super::{lock, Cmd, Shared};

/// Writes local transitions in order. While Redis is unreachable they wait here (each
/// acknowledged at once: the engine has acted on it and must not stall), and are written,
/// merged by version, when it returns.
pub(super) async fn writer(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut queue: VecDeque<Queued> = VecDeque::new();
    let mut flushes: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    let mut delay = Duration::from_millis(100);
    loop {
        // Take everything waiting.
        if queue.is_empty() && flushes.is_empty() {
            match rx.recv().await {
                Some(cmd) => take(cmd, &mut queue, &mut flushes, false),
                None => return,
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            take(cmd, &mut queue, &mut flushes, false);
        }
        lock(&shared.status).pending = queue.len();
        while let Some((t, _)) = queue.front() {
            match shared.write(t).await {
                Ok(()) => {
                    if let Some((_, Some(ack))) = queue.pop_front() {
                        let _ = ack.try_send(Ok(()));
                    }
                    delay = Duration::from_millis(100);
                }
                Err(e) => {
                    shared.mark_degraded(&e);
                    // Kept here in order; whoever waits is released now: the engine acts
                    // on the transition already, and Redis may be gone for long.
                    for (_, ack) in queue.iter_mut() {
                        if let Some(ack) = ack.take() {
                            let _ = ack.try_send(Ok(()));
                        }
                    }
                    break;
                }
            }
        }
        lock(&shared.status).pending = queue.len();
        if queue.is_empty() {
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
            continue;
        }
        // A flush does not wait for Redis to return: the rest is kept here.
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
        // Redis is unreachable: wait, taking new transitions meanwhile.
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => take(cmd, &mut queue, &mut flushes, true),
                    None => break,
                },
            }
        }
        delay = (delay * 2).min(Duration::from_secs(2));
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// A transition waiting to be written, with whoever waits for it.
type Queued = (
    Transition,
    Option<std::sync::mpsc::SyncSender<Result<(), SinkError>>>,
);

pub(super) fn take(
    cmd: Cmd,
    queue: &mut VecDeque<Queued>,
    flushes: &mut Vec<tokio::sync::oneshot::Sender<()>>,
    degraded: bool,
) {
    match cmd {
        Cmd::Write(t, ack) => {
            if degraded {
                // Redis is away: kept here, and the waiter is not held up.
                let _ = ack.try_send(Ok(()));
                queue.push_back((*t, None));
            } else {
                queue.push_back((*t, Some(ack)));
            }
        }
        Cmd::Flush(f) => flushes.push(f),
    }
}
