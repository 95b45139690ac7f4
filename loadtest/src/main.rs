//! `pushsync-loadtest`: see the crate documentation and `--help`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pushsync_loadtest::cli::{Cli, Command, SchemaKind};
use pushsync_loadtest::{report, run, store_bench, sync_bench, sync_rps, worker};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pushsync-loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Worker) => runtime.block_on(worker::main()),
        Some(Command::Schema { which }) => {
            print!("{}", if which == SchemaKind::Run { report::RUN_SCHEMA } else { report::SYNC_BENCH_SCHEMA });
            Ok(())
        }
        Some(Command::SyncBench(args)) => runtime.block_on(sync_bench::run(*args)).map(|r| print!("{}", report::sync_bench_summary(&r))),
        Some(Command::SyncRps(args)) => runtime.block_on(sync_rps::run(*args)).map(|r| print!("{}", sync_rps::summary(&r))),
        Some(Command::StoreBench(args)) => runtime.block_on(store_bench::run(*args)).map(|r| print!("{}", store_bench::summary(&r))),
        None => runtime.block_on(run::run(cli.run)).map(|r| print!("{}", report::summary(&r))),
    };
    // A worker's stdin reader may still be blocked: do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushsync-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}
