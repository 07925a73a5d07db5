//! The `xenith` admin shell: its commands (one definition, used for the
//! one-shot command line, the interactive shell, its help and completion,
//! and the bash/zsh completion scripts), how each maps onto the RPC API
//! ([`exec`]), how results are shown ([`render`]), and the interactive
//! loop ([`interactive`]). The storage and task commands have their own
//! three: [`storage`], [`storage_exec`], [`storage_render`].

pub mod exec;
pub mod interactive;
pub mod render;
pub mod storage;
pub mod storage_exec;
pub mod storage_render;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use storage::{SrVerb, TaskVerb, VdiVerb};

/// `xenith [--socket PATH] [--json] [NOUN VERB [ARGS]]`.
#[derive(Debug, Parser)]
#[command(
    name = "xenith",
    version,
    about = "The xenith admin shell: one command, or none for an interactive shell"
)]
pub struct Cli {
    /// xenithd's RPC socket (default: --socket, $XENITH_SOCKET, then the standard place).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print RPC results as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The shell's commands (CONTRACT.md "Shell commands").
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// The host: hypervisor, memory, CPUs.
    Host {
        #[command(subcommand)]
        verb: HostVerb,
    },
    /// Virtual machines.
    Vm {
        #[command(subcommand)]
        verb: VmVerb,
    },
    /// A running VM's disks.
    Vbd {
        #[command(subcommand)]
        verb: VbdVerb,
    },
    /// A running VM's network interfaces.
    Vif {
        #[command(subcommand)]
        verb: VifVerb,
    },
    /// The xenstore database, as dom0 sees it.
    Xs {
        #[command(subcommand)]
        verb: XsVerb,
    },
    /// Storage repositories (SRs): file directories, LVM volume groups.
    Sr {
        #[command(subcommand)]
        verb: SrVerb,
    },
    /// Virtual disk images (VDIs) in the SRs.
    Vdi {
        #[command(subcommand)]
        verb: VdiVerb,
    },
    /// Long operations (copies, imports, exports) under way or done.
    Task {
        #[command(subcommand)]
        verb: TaskVerb,
    },
    /// Live events, one per line, until Ctrl-C.
    Events {
        /// Only these classes (repeatable); all by default.
        #[arg(long = "class", value_enum)]
        classes: Vec<ClassArg>,
    },
    /// The supervision tree, with states and restart counts.
    Tree,
    /// Prints a completion script for bash or zsh.
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum HostVerb {
    /// Hypervisor, version, memory, CPUs, VM count.
    Info,
    /// Loop devices and guest interfaces (vif*) on the host.
    Devices,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum VmVerb {
    /// Every VM, with its power state and domid.
    List,
    /// Defines a VM from a TOML spec (config/vms/*.toml has examples).
    Create {
        #[arg(value_name = "FILE.toml")]
        file: PathBuf,
    },
    /// One VM in detail: devices, guest agent, emulator.
    Get {
        vm: String,
    },
    /// Starts a Halted VM.
    Start {
        vm: String,
        /// Leave it paused.
        #[arg(long)]
        paused: bool,
    },
    /// Asks the guest to power off (--force: at once).
    Shutdown {
        vm: String,
        #[arg(long)]
        force: bool,
        /// Seconds to wait for the guest.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Shut it down hard if the guest has not by the timeout.
        #[arg(long, conflicts_with = "force")]
        fallback: bool,
    },
    /// Asks the guest to reboot (--force: at once).
    Reboot {
        vm: String,
        #[arg(long)]
        force: bool,
    },
    Pause {
        vm: String,
    },
    Unpause {
        vm: String,
    },
    /// Saves the running VM's memory into its suspend image: Suspended,
    /// no domain (progress shown on a terminal).
    Suspend {
        vm: String,
        /// Seconds the guest has to suspend (default 60).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Print the task's uuid and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Runs a Suspended VM again from its image.
    Resume {
        vm: String,
        /// Leave it paused.
        #[arg(long)]
        paused: bool,
    },
    /// Destroys the domain at once.
    Kill {
        vm: String,
    },
    /// Sets the balloon target of a running VM (at most its memory).
    SetMemoryTarget {
        vm: String,
        /// MiB.
        mib: u64,
    },
    /// Forgets a Halted VM.
    Remove {
        vm: String,
    },
    /// The VM's console output (--follow: then what comes, until Ctrl-C).
    Console {
        vm: String,
        #[arg(long, value_name = "N")]
        lines: Option<u64>,
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum VbdVerb {
    /// Plugs a disk into a running VM.
    Plug {
        vm: String,
        /// An absolute path (a file or block device), or a VDI (its uuid,
        /// name, or SR/NAME).
        disk: String,
        /// xvdb, xvdc...
        device: String,
        #[arg(long, default_value = "rw", value_parser = ["rw", "ro"])]
        mode: String,
    },
    /// Unplugs a disk.
    Unplug { vm: String, device: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum VifVerb {
    /// Plugs a network interface into a running VM.
    Plug {
        vm: String,
        #[arg(long)]
        bridge: Option<String>,
        #[arg(long)]
        mac: Option<String>,
    },
    /// Unplugs a network interface (its devid: 0, 1...).
    Unplug { vm: String, device: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum XsVerb {
    /// A directory's children.
    Ls {
        path: String,
    },
    Read {
        path: String,
    },
    Write {
        path: String,
        value: String,
    },
    /// Removes a node and everything below it.
    Rm {
        path: String,
    },
    /// Prints each path that changes at or below PATH, until Ctrl-C.
    Watch {
        path: String,
    },
}

/// Event classes (`events --class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassArg {
    Vm,
    Vbd,
    Vif,
    Supervisor,
    Host,
    Task,
    Sr,
    Vdi,
}

impl ClassArg {
    pub fn name(self) -> &'static str {
        match self {
            ClassArg::Vm => "vm",
            ClassArg::Vbd => "vbd",
            ClassArg::Vif => "vif",
            ClassArg::Supervisor => "supervisor",
            ClassArg::Host => "host",
            ClassArg::Task => "task",
            ClassArg::Sr => "sr",
            ClassArg::Vdi => "vdi",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
}

/// One line typed in the interactive shell.
#[derive(Debug, Parser)]
#[command(
    name = "xenith",
    no_binary_name = true,
    disable_help_subcommand = true,
    disable_version_flag = true
)]
pub struct Line {
    #[command(subcommand)]
    pub command: LineCommand,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum LineCommand {
    #[command(flatten)]
    Run(Command),
    /// Help on the commands, or on one (`help vm start`).
    Help { words: Vec<String> },
    /// Leaves the shell (so does Ctrl-D).
    #[command(alias = "exit")]
    Quit,
}

/// The completion script for `shell`, generated from the command definitions.
pub fn completion_script(shell: CompletionShell) -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    match shell {
        CompletionShell::Bash => {
            clap_complete::generate(clap_complete::shells::Bash, &mut cmd, "xenith", &mut out)
        }
        CompletionShell::Zsh => {
            clap_complete::generate(clap_complete::shells::Zsh, &mut cmd, "xenith", &mut out)
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The help text of the interactive shell, or of one of its commands.
pub fn line_help(words: &[String]) -> Result<String, String> {
    use clap::CommandFactory;
    let mut cmd = Line::command();
    let mut at = &mut cmd;
    for w in words {
        at = at
            .find_subcommand_mut(w)
            .ok_or_else(|| format!("no command {:?} (type help)", words.join(" ")))?;
    }
    Ok(at.render_help().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Result<LineCommand, clap::Error> {
        Line::try_parse_from(s.split_whitespace()).map(|l| l.command)
    }

    #[test]
    fn lines_parse_into_commands() {
        assert_eq!(
            line("vm start web --paused").unwrap(),
            LineCommand::Run(Command::Vm {
                verb: VmVerb::Start {
                    vm: "web".into(),
                    paused: true
                }
            })
        );
        assert_eq!(line("quit").unwrap(), LineCommand::Quit);
        assert_eq!(line("exit").unwrap(), LineCommand::Quit);
        assert_eq!(
            line("help vm").unwrap(),
            LineCommand::Help {
                words: vec!["vm".into()]
            }
        );
        assert!(line("vm frobnicate x").is_err());
        assert!(line_help(&["vm".into(), "start".into()])
            .unwrap()
            .contains("--paused"));
        assert!(line_help(&["nope".into()]).is_err());
    }

    #[test]
    fn completion_scripts_name_the_commands() {
        let bash = completion_script(CompletionShell::Bash);
        assert!(
            bash.contains("xenith") && bash.contains("shutdown"),
            "{bash}"
        );
        let zsh = completion_script(CompletionShell::Zsh);
        assert!(zsh.starts_with("#compdef xenith"), "{zsh}");
    }
}
