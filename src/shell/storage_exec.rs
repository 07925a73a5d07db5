//! Runs the storage and task commands: one call each, except the long
//! operations (`vdi copy|import|export`), which are called with `async:
//! true` and then followed: `task.get` every [`POLL_EVERY`], a progress bar
//! on a terminal, the result at the end. Ctrl-C asks the daemon to cancel
//! the task (a second one stops waiting); so does stopping the command
//! some other way before the task ends.

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::exec::Shell;
use super::storage::{Output, Request};
use super::storage_render as render;
use crate::proto::rpc::RpcClient;

/// How often a followed task is asked how it is doing.
pub const POLL_EVERY: Duration = Duration::from_millis(200);

/// The bar's length: progress in tenths of a percent.
const BAR_LEN: u64 = 1000;

impl Shell {
    /// Runs one storage or task call and shows its result.
    pub(super) async fn storage(
        &mut self,
        req: Request,
        out: &mut dyn Write,
    ) -> Result<(), String> {
        let color = self.color;
        let Request {
            method,
            params,
            output,
        } = req;
        if let Output::Task { no_wait, said } = output {
            // Ctrl-C from here on cancels the task (once it is known).
            let sigint = (!no_wait)
                .then(|| signal(SignalKind::interrupt()).ok())
                .flatten();
            let v = self.call(method, params).await?;
            let task = v["task"]
                .as_str()
                .ok_or_else(|| format!("{method} answered no task: {v}"))?
                .to_owned();
            if no_wait {
                return self.show(out, &v, |_| task.clone());
            }
            let result = self.follow(&task, method, sigint).await?;
            return self.show(out, &result, |r| match said {
                Some(line) => line,
                None => render::task_result(r),
            });
        }
        let v = self.call(method, params).await?;
        // VDIs name their SR by uuid: people see its name.
        let srs = if !self.json && matches!(output, Output::VdiList | Output::VdiGet) {
            self.call("sr.list", json!({})).await.unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        self.show(out, &v, |v| match output {
            Output::SrList => render::sr_list(v, color),
            Output::SrGet => render::sr_get(v, color),
            Output::SrScan => render::sr_scan(v),
            Output::VdiList => render::vdi_list(v, &srs, color),
            Output::VdiGet => render::vdi_get(v, &srs, color),
            Output::TaskList => render::task_list(v, color),
            Output::TaskGet => render::task_get(v, color),
            Output::TaskCancelled => format!(
                "{}: {}",
                super::render::cell(&v["uuid"]),
                super::render::cell(&v["status"])
            ),
            Output::Uuid => super::render::cell(&v["uuid"]),
            Output::Said(line) => line,
            Output::Task { .. } => String::new(),
        })
    }

    /// Follows a task to its end: its result on success, its error
    /// otherwise.
    async fn follow(
        &self,
        task: &str,
        method: &str,
        sigint: Option<Signal>,
    ) -> Result<Value, String> {
        let bar = progress_bar(self.progress, method);
        let mut guard = CancelOnDrop {
            client: self.client.clone(),
            task: Some(task.to_owned()),
        };
        let result = self.watch(task, method, &bar, &mut guard, sigint).await;
        bar.finish_and_clear();
        result
    }

    async fn watch(
        &self,
        task: &str,
        method: &str,
        bar: &ProgressBar,
        guard: &mut CancelOnDrop,
        mut sigint: Option<Signal>,
    ) -> Result<Value, String> {
        let mut cancelling = false;
        loop {
            let t = self.call("task.get", json!({"task": task})).await?;
            bar.set_position(position(&t["progress"]));
            match t["status"].as_str() {
                Some("success") => {
                    guard.task = None;
                    return Ok(t["result"].clone());
                }
                Some("failure") => {
                    guard.task = None;
                    return Err(render::task_error(&t["error"]));
                }
                Some("cancelled") => {
                    guard.task = None;
                    return Err(format!("task {task} ({method}) was cancelled"));
                }
                Some("cancelling") => bar.set_message(format!("{method} (cancelling)")),
                _ => {}
            }
            let interrupted = async {
                match sigint.as_mut() {
                    Some(s) => s.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(POLL_EVERY) => {}
                ok = interrupted => {
                    if !ok {
                        // No more Ctrl-C to be had: just follow.
                        sigint = None;
                        continue;
                    }
                    if cancelling {
                        guard.task = None;
                        return Err(format!(
                            "interrupted; task {task} ({method}) may still be cancelling"
                        ));
                    }
                    cancelling = true;
                    bar.set_message(format!("{method} (cancelling)"));
                    if let Err(e) = self.call("task.cancel", json!({"task": task})).await {
                        guard.task = None;
                        return Err(format!("interrupted; task {task} goes on: {e}"));
                    }
                }
            }
        }
    }
}

/// A progress (0.0..1.0) as the bar's position.
fn position(progress: &Value) -> u64 {
    let p = progress.as_f64().unwrap_or(0.0).clamp(0.0, 1.0);
    // In 0..=BAR_LEN, so it fits.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let pos = (p * BAR_LEN as f64).round() as u64;
    pos.min(BAR_LEN)
}

/// A bar on stderr, or a hidden one (not a terminal, or --json).
fn progress_bar(shown: bool, method: &str) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(BAR_LEN), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} {msg} [{wide_bar}] {percent:>3}% {elapsed_precise}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(method.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Cancels a followed task when the command stops before the task ends
/// (e.g. Ctrl-C in the interactive shell, which drops the command).
struct CancelOnDrop {
    client: RpcClient,
    task: Option<String>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let (Some(task), Ok(rt)) = (self.task.take(), tokio::runtime::Handle::try_current()) {
            let client = self.client.clone();
            rt.spawn(async move {
                let _ = client
                    .call::<Value, Value>("task.cancel", json!({"task": task}))
                    .await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_maps_onto_the_bar() {
        assert_eq!(position(&json!(0.0)), 0);
        assert_eq!(position(&json!(0.4254)), 425);
        assert_eq!(position(&json!(1.0)), BAR_LEN);
        assert_eq!(position(&json!(7.0)), BAR_LEN);
        assert_eq!(position(&json!(-1.0)), 0);
        assert_eq!(position(&Value::Null), 0);
        assert!(progress_bar(false, "vdi.copy").is_hidden());
    }
}
