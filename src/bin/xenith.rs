//! xenith, the admin shell (CONTRACT.md "Binaries", "Shell commands").
//! One-shot: `xenith [--socket PATH] [--json] NOUN VERB [ARGS]`, exit 0 on
//! success and 1 on error (message on stderr).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xenith::actors::host::HostInfo;
use xenith::actors::supervisor::{ChildKind, TreeNode};
use xenith::proto::rpc::RpcClient;

#[derive(Debug, Parser)]
#[command(name = "xenith", version, about = "The xenith admin shell")]
struct Args {
    /// xenithd's RPC socket (default: as CONTRACT.md resolves it).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the RPC result as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The host.
    Host {
        #[command(subcommand)]
        verb: HostVerb,
    },
    /// The supervision tree, drawn with states and restart counts.
    Tree,
}

#[derive(Debug, Subcommand)]
enum HostVerb {
    /// Hypervisor, memory, CPUs, VM count.
    Info,
}

#[allow(clippy::print_stdout)]
fn print(text: &str) {
    println!("{text}");
}

fn render_host(h: &HostInfo) -> String {
    let rows = [
        ("hostname", h.hostname.clone()),
        ("hypervisor", h.hypervisor.clone()),
        ("xen_version", h.xen_version.clone()),
        ("total_mib", h.total_mib.to_string()),
        ("free_mib", h.free_mib.to_string()),
        ("cpus", h.cpus.to_string()),
        ("vms", h.vms.to_string()),
    ];
    rows.iter()
        .map(|(k, v)| format!("{k:<12} {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn render_tree(node: &TreeNode) -> String {
    fn label(n: &TreeNode) -> String {
        let kind = match n.kind {
            ChildKind::Supervisor => "supervisor",
            ChildKind::Worker => "worker",
        };
        let mut s = format!("{} ({kind}) {}", n.id, n.state);
        if n.restarts > 0 {
            s.push_str(&format!(
                ", {} restart{}",
                n.restarts,
                if n.restarts == 1 { "" } else { "s" }
            ));
        }
        if let Some(e) = &n.last_exit {
            s.push_str(&format!(", last exit: {e}"));
        }
        s
    }
    fn walk(n: &TreeNode, prefix: &str, out: &mut Vec<String>) {
        for (i, child) in n.children.iter().enumerate() {
            let last = i + 1 == n.children.len();
            out.push(format!(
                "{prefix}{}{}",
                if last { "└── " } else { "├── " },
                label(child)
            ));
            walk(
                child,
                &format!("{prefix}{}", if last { "    " } else { "│   " }),
                out,
            );
        }
    }
    let mut out = vec![label(node)];
    walk(node, "", &mut out);
    out.join("\n")
}

async fn run(args: Args) -> Result<(), String> {
    let socket = args.socket.unwrap_or_else(xenith::paths::default_socket);
    let client = RpcClient::connect(&socket)
        .await
        .map_err(|e| xenith::error::chain(&e))?;
    let chain = |e: xenith::proto::rpc::ClientError| xenith::error::chain(&e);
    match args.command {
        Command::Host {
            verb: HostVerb::Info,
        } => {
            let info: HostInfo = client.call("host.info", ()).await.map_err(chain)?;
            if args.json {
                print(&serde_json::to_string_pretty(&info).map_err(|e| e.to_string())?);
            } else {
                print(&render_host(&info));
            }
        }
        Command::Tree => {
            let value = client
                .call_value("supervisor.tree", ())
                .await
                .map_err(chain)?;
            if args.json {
                print(&serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?);
            } else {
                let tree: TreeNode = xenith::proto::rpc::wire::from_named_value(&value)
                    .map_err(|e| e.to_string())?;
                print(&render_tree(&tree));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
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
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xenith: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xenith: {e}");
            ExitCode::FAILURE
        }
    }
}
