//! The `localhostd` binary: parse the command line, load the config (exit 78 when it is bad),
//! start logging, build the runtime, run. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use localhostd::cli::{Cli, Command, ConfigArg, ServeArgs};
use localhostd::config::{ConfigError, ConfigSource};
use localhostd::{daemon, logging, systemd};

/// sysexits.h EX_CONFIG: systemd and scripts can tell a bad config from a crash.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig(args) => check_config(args),
        Command::Token { config, action } => token(config, action),
        Command::Backup { config, action } => backup(config, action),
        Command::LoginUrl { config, base } => login_url(config, base),
        Command::ImportSeed {
            config,
            path,
            dry_run,
        } => import_seed(config, &path, dry_run),
        Command::SandboxHelper => localhostd::jobs::sandbox::child::main(),
        Command::SandboxZygote => localhostd::jobs::sandbox::zygote::main(),
        Command::GenerateAssets { out } => match localhostd::cli::generate_assets(&out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("localhostd: cannot write assets to {}: {e}", out.display());
                ExitCode::FAILURE
            }
        },
    }
}

/// glibc gives freed memory back as soon as an arena's top passes 128 KiB (madvise or brk),
/// and each give-back flushes the TLB of every CPU running one of our threads (IPIs). The
/// database writer frees a whole group commit's allocations at once, so under a write load
/// it kept giving memory back only to ask for it again (madvise → flush_tlb_mm_range in a
/// profile). Fixed thresholds keep up to 2 MiB of freed memory per arena for reuse and serve
/// blocks below 4 MiB from the arenas (fixing them also stops glibc's dynamic threshold,
/// which would otherwise move them); at most 4 arenas, so what the arenas keep after a burst
/// stays bounded (benches/files.sh measures the RSS). Environment variables
/// (MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_, MALLOC_ARENA_MAX) still override.
fn tune_malloc() {
    let env_set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    // SAFETY: mallopt with integer arguments, before any other thread exists.
    unsafe {
        if !env_set("MALLOC_TRIM_THRESHOLD_") {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 2 << 20);
        }
        if !env_set("MALLOC_MMAP_THRESHOLD_") {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        }
        if !env_set("MALLOC_ARENA_MAX") {
            libc::mallopt(libc::M_ARENA_MAX, 4);
        }
    }
}

fn config_failed(e: &ConfigError) -> ExitCode {
    eprintln!("localhostd: invalid configuration: {e}");
    systemd::status(&format!("invalid configuration: {e}"));
    ExitCode::from(EXIT_CONFIG)
}

fn serve(args: ServeArgs) -> ExitCode {
    tune_malloc();
    // Before any thread exists: this reads and clears LISTEN_* from the environment.
    let activated = match systemd::take_activated_listeners() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("localhostd: {e}");
            return ExitCode::FAILURE;
        }
    };
    systemd::status("loading configuration");
    let source = ConfigSource::resolve(args.config.config);
    let mut config = match source.load() {
        Ok(c) => c,
        Err(e) => return config_failed(&e),
    };
    if let Some(f) = args.log_format {
        config.log.format = f;
    }
    if let Some(t) = args.log_target {
        config.log.target = t;
    }
    if let Some(level) = args.log_level {
        if let Err(e) = localhostd::config::parse_log_filter(&level) {
            eprintln!("localhostd: invalid --log-level {level:?}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        config.log.level = level;
    }
    let log = logging::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("localhostd")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let opts = daemon::RunOptions {
        config,
        source,
        activated,
        state_directory_env: localhostd::config::state_directory_env(),
        log,
    };
    match runtime.block_on(daemon::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "localhostd failed");
            systemd::status(&format!("failed: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn token(args: ConfigArg, action: localhostd::cli::TokenAction) -> ExitCode {
    let source = ConfigSource::resolve(args.config);
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => return config_failed(&e),
    };
    let state_dir = config.state_dir(localhostd::config::state_directory_env().as_deref());
    match localhostd::adminctl::token(&config, &state_dir, action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("localhostd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn login_url(args: ConfigArg, base: Option<String>) -> ExitCode {
    let source = ConfigSource::resolve(args.config);
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => return config_failed(&e),
    };
    let state_dir = config.state_dir(localhostd::config::state_directory_env().as_deref());
    match localhostd::adminctl::login_url(&config, &state_dir, base.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("localhostd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn backup(args: ConfigArg, action: localhostd::cli::BackupAction) -> ExitCode {
    let source = ConfigSource::resolve(args.config);
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => return config_failed(&e),
    };
    let state_dir = config.state_dir(localhostd::config::state_directory_env().as_deref());
    match localhostd::adminctl::backup(&config, &state_dir, action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("localhostd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn import_seed(args: ConfigArg, path: &std::path::Path, dry_run: bool) -> ExitCode {
    let source = ConfigSource::resolve(args.config);
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => return config_failed(&e),
    };
    let state_dir = config.state_dir(localhostd::config::state_directory_env().as_deref());
    match localhostd::adminctl::import_seed(&config, &state_dir, path, dry_run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("localhostd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(args: ConfigArg) -> ExitCode {
    let source = ConfigSource::resolve(args.config);
    match source.load() {
        Ok(config) => {
            if source.path.exists() {
                eprintln!(
                    "{}: configuration is valid; effective configuration:",
                    source.path.display()
                );
            } else {
                eprintln!(
                    "{} does not exist; built-in defaults are in force:",
                    source.path.display()
                );
            }
            print!("{}", config.to_toml());
            if config.tunnels.enabled {
                eprintln!("\n{}", localhostd::ops::tunnels::exposure(&config.tunnels));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("localhostd: invalid configuration: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
