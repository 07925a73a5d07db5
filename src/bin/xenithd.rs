//! xenithd, the xenith dom0 service (CONTRACT.md "Binaries").

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use xenith::config::{Config, HypervisorChoice, LogFormat, Overrides, XenstoreChoice};

/// The xenith toolstack daemon: runs Xen domains under a supervision tree.
#[derive(Debug, Parser)]
#[command(name = "xenithd", version)]
struct Args {
    /// Configuration file (default: /etc/xenith/xenith.toml if it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// RPC socket path.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Directory for VM records.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Hypervisor backend.
    #[arg(long, value_enum)]
    hypervisor: Option<HypervisorChoice>,
    /// xenstored to use: auto, embedded, or the socket of an existing one.
    #[arg(long, value_name = "auto|embedded|PATH")]
    xenstore: Option<XenstoreChoice>,
    /// Accept fault.inject calls (for testing).
    #[arg(long)]
    allow_fault_injection: bool,
    /// Run the embedded xenstored even with the xen hypervisor (refused
    /// otherwise: on a Xen host the host's xenstored is the real one).
    #[arg(long)]
    force_embedded_xenstore: bool,
    /// Log format on stderr.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the embedded xenstored alone.
    Xenstored {
        /// The socket to serve.
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
    },
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    // A panic anywhere is logged (actors' panics are also contained and
    // reported by their supervisors).
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "panic");
    }));
}

fn main() -> ExitCode {
    let args = Args::parse();
    let overrides = Overrides {
        socket: args.socket,
        state_dir: args.state_dir,
        hypervisor: args.hypervisor,
        xenstore: args.xenstore,
        allow_fault_injection: args.allow_fault_injection,
        force_embedded_xenstore: args.force_embedded_xenstore,
        log_format: args.log_format,
    };
    let config = match Config::load(args.config.as_deref(), overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xenithd: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let system = actix::System::new();
    let run = match args.command {
        Some(Command::Xenstored { socket }) => {
            system.block_on(xenith::daemon::run_xenstored(socket))
        }
        None => system.block_on(xenith::daemon::run(config)),
    };
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.exit_code() == 2 => {
            // The host or the configuration is at fault: one line, exit 2
            // (the unit does not restart on it).
            let line = xenith::error::chain(&e);
            if line.starts_with("xenithd") {
                eprintln!("{line}");
            } else {
                eprintln!("xenithd: {line}");
            }
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!(error = %xenith::error::chain(&e), "xenithd failed");
            ExitCode::from(e.exit_code())
        }
    }
}
