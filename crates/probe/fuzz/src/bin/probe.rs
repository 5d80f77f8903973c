//! AFL++ target: the whole `probe` entry point, detection included.

fn main() {
    asset_probe_fuzz::run(asset_probe_fuzz::Target::Probe);
}
