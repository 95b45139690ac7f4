//! A worker process: the coordinator re-executes its own binary as `pushsync-loadtest
//! worker`, writes one JSON line with the [`FleetSpec`] to its stdin, and reads its events as
//! JSON lines from its stdout. A `{"cmd":"stop"}` line, or stdin closing (the coordinator
//! died), stops it.

use std::process::Stdio;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use crate::events::{Control, Event};
use crate::fleet::{self, FleetSpec};

/// The `worker` subcommand.
pub async fn main() -> anyhow::Result<()> {
    let _ = crate::split::raise_nofile_limit();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let line = stdin.next_line().await?.context("no worker spec on stdin")?;
    let spec: FleetSpec = serde_json::from_str(&line).context("bad worker spec")?;
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                match stdin.next_line().await {
                    Ok(Some(l)) if serde_json::from_str::<Control>(&l).ok() == Some(Control::Stop) => break,
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
            stop.cancel();
        });
    }
    let (tx, mut rx) = unbounded_channel::<Event>();
    let writer = tokio::spawn(async move {
        let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
        while let Some(e) = rx.recv().await {
            out.write_all(e.to_line().as_bytes()).await?;
            out.write_all(b"\n").await?;
            // Batch what is queued, then flush: latency events must not sit in a buffer.
            while let Ok(e) = rx.try_recv() {
                out.write_all(e.to_line().as_bytes()).await?;
                out.write_all(b"\n").await?;
            }
            out.flush().await?;
        }
        out.flush().await?;
        Ok::<(), std::io::Error>(())
    });
    let result = fleet::run(spec, tx, stop).await;
    writer.await??;
    result
}

/// A worker as the coordinator sees it.
pub struct WorkerHandle {
    pub child: Child,
    stdin: Option<ChildStdin>,
}

impl WorkerHandle {
    /// Starts `exe worker`, hands it `spec`, and forwards its events (tagged with `id`) to `events`.
    pub async fn spawn(
        exe: &std::path::Path,
        id: usize,
        spec: &FleetSpec,
        events: UnboundedSender<(usize, Event)>,
    ) -> anyhow::Result<WorkerHandle> {
        let mut child = Command::new(exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start worker process {}", exe.display()))?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let mut line = serde_json::to_string(spec)?;
        line.push('\n');
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await?;
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                match Event::from_line(&l) {
                    Ok(e) => {
                        if events.send((id, e)).is_err() {
                            break;
                        }
                    }
                    Err(err) => eprintln!("worker {id}: {err}"),
                }
            }
        });
        Ok(WorkerHandle { child, stdin: Some(stdin) })
    }

    /// Asks the worker to stop its devices (it then sends its last stats and exits).
    pub async fn stop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let mut line = serde_json::to_string(&Control::Stop).unwrap_or_default();
            line.push('\n');
            let _ = stdin.write_all(line.as_bytes()).await;
            let _ = stdin.flush().await;
        }
    }
}
