//! Running the storage tools (qemu-img, lvm, cp): their output read, their
//! failure turned into an error carrying their own message, their absence
//! into one naming the Debian package to install.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Job, StorageError, VdiFormat};

/// One tool: what it is called, where it is, which package brings it.
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: &'static str,
    pub program: PathBuf,
    pub package: &'static str,
    /// Put before every argument list (`lvm` runs each LVM command).
    pub prefix: Vec<OsString>,
}

/// The storage tools the drivers run.
#[derive(Debug, Clone)]
pub struct StorageTools {
    pub qemu_img: Tool,
    pub lvm: Tool,
    pub cp: Tool,
}

impl Default for StorageTools {
    fn default() -> Self {
        Self::new("qemu-img".into(), "lvm".into())
    }
}

impl StorageTools {
    pub fn new(qemu_img: PathBuf, lvm: PathBuf) -> Self {
        Self {
            qemu_img: Tool {
                name: "qemu-img",
                program: qemu_img,
                package: "qemu-utils",
                prefix: Vec::new(),
            },
            lvm: Tool {
                name: "lvm",
                program: lvm,
                package: "lvm2",
                prefix: Vec::new(),
            },
            cp: Tool {
                name: "cp",
                program: "cp".into(),
                package: "coreutils",
                prefix: Vec::new(),
            },
        }
    }
}

/// The longest tool message kept in an error.
const MAX_MESSAGE: usize = 2000;

/// What a failed tool said: its stderr (else stdout), trimmed, in one line.
fn message(stderr: &[u8], stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(if stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        stderr
    } else {
        stdout
    });
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        // lvm's notes about descriptors it was handed say nothing of the failure.
        .filter(|l| !l.contains("leaked on lvm invocation"))
        .collect();
    let mut m = lines.join("; ");
    if m.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        m.truncate(end);
        m.push('…');
    }
    if m.is_empty() {
        "(no message)".into()
    } else {
        m
    }
}

impl Tool {
    fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.prefix)
            .args(args)
            .stdin(Stdio::null())
            .env("LC_ALL", "C")
            .env("LVM_SUPPRESS_FD_WARNINGS", "1");
        c
    }

    fn spawn_error(&self, e: std::io::Error) -> StorageError {
        if e.kind() == std::io::ErrorKind::NotFound {
            StorageError::ToolMissing {
                tool: self.name,
                program: self.program.clone(),
                package: self.package,
            }
        } else {
            StorageError::Tool {
                tool: self.name,
                message: format!("cannot run {}: {e}", self.program.display()),
            }
        }
    }

    /// Runs the tool to its end; its stdout when it succeeds (blocking).
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String, StorageError> {
        crate::drivers::blocking::debug_assert_blocking_allowed(self.name);
        let out = self
            .command(args)
            .output()
            .map_err(|e| self.spawn_error(e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(StorageError::Tool {
                tool: self.name,
                message: message(&out.stderr, &out.stdout),
            })
        }
    }

    /// Runs the tool, passing each chunk of its stdout to `progress` and
    /// killing it when `job` is cancelled (blocking).
    pub fn run_job<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        job: &Job,
        progress: impl Fn(&str) -> Option<f64> + Send + 'static,
    ) -> Result<(), StorageError> {
        crate::drivers::blocking::debug_assert_blocking_allowed(self.name);
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_error(e))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let job2 = job.clone();
        // qemu-img rewrites its progress line with '\r': read as it comes.
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut s) = stdout {
                let mut buf = [0u8; 512];
                let mut line = String::new();
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                    line.push_str(&String::from_utf8_lossy(&buf[..n]));
                    while let Some(end) = line.find(['\r', '\n']) {
                        if let Some(p) = progress(&line[..end]) {
                            job2.set_progress(p);
                        }
                        line.drain(..=end);
                    }
                }
            }
            out
        });
        let err_reader = std::thread::spawn(move || {
            let mut err = Vec::new();
            if let Some(mut s) = stderr {
                let _ = s.read_to_end(&mut err);
            }
            err
        });
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if job.is_cancelled() => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(StorageError::Cancelled);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => break Err(self.spawn_error(e)),
            }
        };
        let out = reader.join().unwrap_or_default();
        let err = err_reader.join().unwrap_or_default();
        let status = status?;
        if status.success() {
            Ok(())
        } else {
            Err(StorageError::Tool {
                tool: self.name,
                message: message(&err, &out),
            })
        }
    }
}

/// Reads qemu-img's `-p` line: "    (12.50/100%)".
pub fn qemu_img_progress(line: &str) -> Option<f64> {
    let inner = line.trim().strip_prefix('(')?.strip_suffix("/100%)")?;
    inner.parse::<f64>().ok().map(|p| p / 100.0)
}

/// `qemu-img convert` of `from` to `to`: into an existing target
/// (`existing`, a block device or a volume made to size), else a new file.
pub fn convert(
    tools: &StorageTools,
    from: &Path,
    from_format: VdiFormat,
    to: &Path,
    format: VdiFormat,
    existing: bool,
    job: &Job,
) -> Result<(), StorageError> {
    let mut args: Vec<&OsStr> = vec![
        "convert".as_ref(),
        "-p".as_ref(),
        "-f".as_ref(),
        from_format.as_str().as_ref(),
        "-O".as_ref(),
        format.as_str().as_ref(),
    ];
    if existing {
        args.push("-n".as_ref());
    }
    args.push(from.as_os_str());
    args.push(to.as_os_str());
    tools.qemu_img.run_job(&args, job, qemu_img_progress)?;
    job.set_progress(1.0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_without_lvm_noise() {
        let err = b"File descriptor 9 (pipe) leaked on lvm invocation. Parent PID 1: x\n  Volume group \"vg\" not found\n  Cannot process volume group vg\n";
        assert_eq!(
            message(err, b""),
            "Volume group \"vg\" not found; Cannot process volume group vg"
        );
        assert_eq!(message(b"  ", b"out\n"), "out");
        assert_eq!(message(b"", b""), "(no message)");
        assert!(message(&vec![b'x'; 5000], b"").len() <= MAX_MESSAGE + 3);
    }

    #[test]
    fn progress_lines_parse() {
        assert_eq!(qemu_img_progress("    (12.50/100%)"), Some(0.125));
        assert_eq!(qemu_img_progress("(100.00/100%)"), Some(1.0));
        assert_eq!(qemu_img_progress("garbage"), None);
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let tools = StorageTools::new("/nonexistent/qemu-img".into(), "lvm".into());
        let e = tools.qemu_img.run(&["--version"]).unwrap_err();
        assert!(e.to_string().contains("install Debian's qemu-utils"), "{e}");
        let e = tools
            .qemu_img
            .run_job(&["--version"], &Job::new(), qemu_img_progress)
            .unwrap_err();
        assert!(matches!(e, StorageError::ToolMissing { .. }), "{e}");
    }

    #[test]
    fn a_failing_tool_says_what_it_printed_and_a_cancel_kills_it() {
        let sh = Tool {
            name: "sh",
            program: "sh".into(),
            package: "dash",
            prefix: vec!["-c".into()],
        };
        let e = sh.run(&["echo nope >&2; exit 3"]).unwrap_err();
        assert_eq!(e.to_string(), "sh failed: nope");
        let job = Job::new();
        let j = job.clone();
        let t = std::thread::spawn(move || {
            sh.run_job(
                &["printf '    (50.00/100%%)\\r'; exec sleep 30"],
                &j,
                qemu_img_progress,
            )
        });
        while job.progress() < 0.5 {
            std::thread::sleep(Duration::from_millis(5));
        }
        job.cancel();
        assert!(matches!(t.join().unwrap(), Err(StorageError::Cancelled)));
    }
}
