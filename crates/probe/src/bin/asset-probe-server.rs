//! A probe process on its own, for the crate's tests and for embedding the probe in
//! another program: `asset-probe-server MEMORY_CEILING_BYTES` answers probe requests on
//! stdin (see `asset_probe::isolate`). The worker runs the same loop as its hidden
//! `probe-server` command.

fn main() -> std::process::ExitCode {
    let ceiling = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(
        asset_probe::isolate::DEFAULT_MEMORY_CEILING + asset_probe::Limits::default().max_memory_bytes,
    );
    match asset_probe::isolate::serve(ceiling) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("asset-probe-server: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
