//! The command line, defined once: `main.rs` parses it, and the man page and shell
//! completions are generated from it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{LogFormat, LogTarget};

/// HTTP API and web UI for one host: data, files, sandboxed programs, monitoring, backups.
#[derive(Debug, Parser)]
#[command(name = "localhostd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: the API and the web UI (systemd starts it this way).
    Serve(ServeArgs),
    /// Validate the config file and print the effective configuration.
    CheckConfig(ConfigArg),
    /// Manage API tokens: through the running daemon's admin socket, or offline when no
    /// daemon runs (as the state directory's owner, holding its lock).
    Token {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Make, list, verify, restore and prune backups: through the running daemon's admin
    /// socket, or offline when no daemon runs (as the state directory's owner, holding its
    /// lock). Restore runs offline only: stop the service first.
    Backup {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: BackupAction,
    },
    /// Import a seed installation's data folder (its keys, files and programs), offline: the
    /// service must be stopped. All or nothing; prints what was imported, skipped and in
    /// conflict (existing names are never overwritten). See docs/seed-import.md.
    ImportSeed {
        #[command(flatten)]
        config: ConfigArg,
        /// The seed installation (holding data/) or its data folder
        path: PathBuf,
        /// Print the report only; change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a one-time login link to the web UI for the host's admin.
    ///
    /// Prints `<base>/login#link=<secret>`: open it in a browser to log in as the host's admin,
    /// without a token. The running daemon makes it through its admin socket (run this as root
    /// or the daemon's user, on the host); it works once and expires after
    /// auth.login-link-ttl (5 minutes by default). Behind nginx, pass --base.
    LoginUrl {
        #[command(flatten)]
        config: ConfigArg,
        /// The address the browser reaches the daemon at, such as https://host.example.com.
        /// Behind nginx (or any proxy) pass this: the default is the first TCP address of
        /// server.listen (http://127.0.0.1:8080 unless configured), with 0.0.0.0 or :: read
        /// as loopback
        #[arg(long, value_name = "URL")]
        base: Option<String>,
    },
    /// Internal: the sandbox helper the daemon starts for each job (fds 0-4 set up by it).
    #[command(hide = true)]
    SandboxHelper,
    /// Internal: the zygote the daemon starts once; it forks a sandbox helper per job.
    #[command(hide = true)]
    SandboxZygote,
    /// Write the man page and shell completions into a directory (used by packaging).
    #[command(hide = true)]
    GenerateAssets {
        /// Output directory (created if missing)
        out: PathBuf,
    },
}

/// Writes `localhostd.8` and completions for bash, zsh and fish into `out`.
pub fn generate_assets(out: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    std::fs::create_dir_all(out)?;
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    let mut page = Vec::new();
    man.render(&mut page)?;
    std::fs::write(out.join("localhostd.8"), page)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut c = cmd.clone();
        clap_complete::generate_to(shell, &mut c, "localhostd", out)?;
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token; it is printed once, on standard output, and stored only as a hash.
    Create {
        /// A unique name (letters, digits, - _ . @)
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: read, write, exec, admin (implies all), metrics
        #[arg(long, value_name = "SCOPES")]
        scope: String,
        /// Lifetime such as 30d or 12h [default: never expires]
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id or name; its browser sessions end too.
    Revoke {
        /// The token's id or name
        token: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupAction {
    /// Make a backup now; prints its id.
    Create,
    /// List the backups, newest first.
    List,
    /// Check a backup's structure against its manifest (and with --read-data every byte).
    Verify {
        /// Re-read every byte and recompute every SHA-256
        #[arg(long)]
        read_data: bool,
        /// The backup's id (see `backup list`)
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        id: Option<String>,
        /// Verify this archive file instead (no daemon or state directory needed)
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Replace all state by a backup (the service must be stopped). Verifies it fully first;
    /// on any failure the current state stays as it was.
    Restore {
        /// The backup's id (see `backup list`)
        id: String,
    },
    /// Remove backups beyond backup.keep-last that are older than backup.keep-within.
    Prune,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file [default: $LOCALHOSTD_CONFIG, else /etc/localhostd/config.toml when it exists,
    /// else built-in defaults]
    #[arg(long, short = 'c', value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Log format on stderr (overrides log.format)
    #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
    pub log_format: Option<LogFormat>,
    /// Where logs go (overrides log.target)
    #[arg(long, value_name = "TARGET", value_parser = parse_target)]
    pub log_target: Option<LogTarget>,
    /// Log filter such as info or debug (overrides log.level)
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

fn parse_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected text or json".into()),
    }
}

fn parse_target(s: &str) -> Result<LogTarget, String> {
    match s {
        "auto" => Ok(LogTarget::Auto),
        "journald" => Ok(LogTarget::Journald),
        "stderr" => Ok(LogTarget::Stderr),
        _ => Err("expected auto, journald or stderr".into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
