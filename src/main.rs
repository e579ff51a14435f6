//! The `embedgate` command: run the gateway, or check a config file.
//!
//! The one `unsafe` of the gateway is here: the global allocator, which
//! hands mimalloc's blocks to Rust, and its idle collection. Each block
//! says why it holds.

#![deny(unsafe_op_in_unsafe_fn)]

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use embedgate::{Config, Gateway, LogFormat};

/// mimalloc: as cheap per request as glibc's malloc, and it gives what idle
/// connections free back to the OS (with [`collect_when_idle`]), which
/// glibc's does not without `malloc_trim` (`bench/levers.md` has the
/// figures).
#[global_allocator]
static ALLOCATOR: Mimalloc = Mimalloc;

/// mimalloc, asked for plain blocks whenever those are aligned enough.
/// The `mimalloc` crate's allocator asks for every block with its
/// alignment, and mimalloc 3 takes a slower path for those over 1 KiB
/// (hyper's read buffers, two a request). Every mimalloc block is aligned to a machine word (its smallest size
/// class is one word, every class a whole number of words); 16-byte
/// alignment is not every class's, so it goes the aligned way.
struct Mimalloc;

fn plain(align: usize) -> bool {
    align <= std::mem::size_of::<usize>()
}

// SAFETY: every block comes from mimalloc and goes back to it; a block
// asked for plainly is only so when `plain` holds, that is when mimalloc's
// own alignment (a word) already satisfies the layout.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        if plain(layout.align()) {
            // SAFETY: any size may be asked for; a word's alignment (every
            // block's) satisfies this layout's, as `plain` says.
            unsafe { mi::mi_malloc(layout.size()).cast() }
        } else {
            // SAFETY: `Layout` guarantees a power-of-two alignment.
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()).cast() }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        if plain(layout.align()) {
            // SAFETY: as in `alloc`.
            unsafe { mi::mi_zalloc(layout.size()).cast() }
        } else {
            // SAFETY: as in `alloc`.
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()).cast() }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: the caller gives back a block this allocator gave, plain
        // or aligned alike (mimalloc frees both with `mi_free`).
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys as mi;
        if plain(layout.align()) {
            // SAFETY: `ptr` is this allocator's, asked for plainly (its
            // layout is plain too); the new block keeps a word's alignment.
            unsafe { mi::mi_realloc(ptr.cast(), new_size).cast() }
        } else {
            // SAFETY: `ptr` is this allocator's, asked for with this
            // alignment, which the new block keeps.
            unsafe { mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast() }
        }
    }
}

/// A reverse-proxy gateway that embeds web apps through personal access tokens.
///
/// Without a command, runs the gateway with the configuration file (SIGHUP
/// reloads it, SIGTERM drains and exits); `check` validates it instead.
#[derive(Parser)]
#[command(name = "embedgate", version)]
struct Cli {
    /// The configuration file.
    #[arg(short = 'c', long, global = true, default_value = "gateway.toml")]
    config: PathBuf,
    /// Log line format (to stderr; `RUST_LOG` filters).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration: exit 0, or 1 listing every problem.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end, so the last lines (the drain's) are written.
    let _log = embedgate::init_logging(cli.log_format);
    match cli.command {
        Some(Command::Check) => check(&cli.config),
        None => run(&cli.config),
    }
}

fn check(path: &Path) -> ExitCode {
    match embedgate::load_config(path).and_then(embedgate::check) {
        Ok(warnings) => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(path: &Path) -> ExitCode {
    let config = match embedgate::load_config(path) {
        Ok(config) => config,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    // One worker: a current-thread runtime (the whole gateway on the main
    // thread) does the same work without the multi-thread scheduler's
    // cross-thread queues and wake-ups.
    let mut runtime = match config.worker_threads() {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    runtime.enable_all();
    collect_when_idle(&mut runtime);
    let runtime = match runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(path, config));
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// When a worker has nothing to do, at most once a second, hands the pages
/// freed on its thread back to the OS: mimalloc otherwise keeps them until
/// that thread allocates again, so the buffers idle connections let go of
/// (see the server's parking) would stay in the RSS.
fn collect_when_idle(runtime: &mut tokio::runtime::Builder) {
    const EVERY: Duration = Duration::from_secs(1);
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    runtime.on_thread_park(|| {
        LAST.with(|last| {
            let now = Instant::now();
            if last.get().is_none_or(|at| now.duration_since(at) >= EVERY) {
                last.set(Some(now));
                // SAFETY: mi_collect only walks this thread's own heap.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        });
    });
}

async fn serve(path: &Path, config: Config) -> ExitCode {
    let (mut term, mut hup) = match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
        (Ok(term), Ok(hup)) => (term, hup),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let gateway = match Gateway::start(config).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    announce(&gateway);

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => if let Err(e) = gateway.reload_file(path) {
                error!("configuration reload refused; the old configuration stays:\n{e}");
            },
        }
    }

    let grace = gateway.shutdown_grace();
    info!(grace_seconds = grace.as_secs(), "draining");
    if tokio::time::timeout(grace, gateway.shutdown()).await.is_err() {
        warn!("grace period over; closing what is still open");
    } else {
        info!("drained");
    }
    ExitCode::SUCCESS
}

/// The stdout lines a person (and the tests) read: where everything is.
fn announce(gateway: &Gateway) {
    let admin = gateway
        .admin_addr()
        .map_or_else(|| "none".to_string(), |a| format!("http://{a}"));
    println!(
        "embedgate ready: public={}://{} admin={admin}",
        gateway.public_scheme(),
        gateway.public_addr()
    );
    // The first line is where it listens; this one is what it hands out.
    println!(
        "  public URL:     {}  (server.public_url: the base of every URL handed out)",
        gateway.public_url()
    );
    if let Some(demo) = gateway.demo() {
        println!();
        println!("  Open the demo portal in a browser:  http://{}/", demo.portal);
        println!("  demo app (direct, no identity):     http://{}/", demo.app);
        println!("  demo API token (this run only):     {}", demo.api_token);
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::ALLOCATOR;

    /// Every size class, at every alignment a Rust type asks for: plain
    /// blocks (up to a word) and aligned ones, fresh, zeroed and grown.
    #[test]
    fn the_allocator_honours_every_alignment() {
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in (1..=300).chain([1000, 1024, 1100, 4096, 8192, 70_000]) {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: a non-zero size; each block is freed with its layout.
                unsafe {
                    let p = ALLOCATOR.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "alloc size {size} align {align}");
                    p.write_bytes(0xab, size);
                    let grown = ALLOCATOR.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "realloc size {size} align {align}");
                    assert!((0..size).all(|i| *grown.add(i) == 0xab), "realloc kept the bytes");
                    ALLOCATOR.dealloc(grown, Layout::from_size_align_unchecked(size * 3, align));
                    let z = ALLOCATOR.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "alloc_zeroed size {size} align {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0), "zeroed");
                    ALLOCATOR.dealloc(z, layout);
                }
            }
        }
    }
}
