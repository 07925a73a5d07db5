//! xenith, the admin shell (CONTRACT.md "Binaries", "Shell commands").
//! With a command: run it, print, exit 0 on success and 1 on error (message
//! on stderr). Without one: the interactive shell.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use xenith::shell::exec::Shell;
use xenith::shell::{interactive, Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            // Usage errors are errors (exit 1); asking for help or the version is not.
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // Completion scripts need no daemon.
    if let Some(Command::Completions { shell }) = &cli.command {
        use std::io::Write;
        let script = xenith::shell::completion_script(*shell);
        return match std::io::stdout().write_all(script.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xenith: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(xenith::paths::default_socket);
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let result = runtime
        .block_on(Shell::connect(&socket, cli.json, color))
        .and_then(|mut shell| match cli.command {
            Some(cmd) => runtime.block_on(shell.run(cmd, &mut std::io::stdout())),
            None => interactive::run(&runtime, shell),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xenith: {e}");
            ExitCode::FAILURE
        }
    }
}
