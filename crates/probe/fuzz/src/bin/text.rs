//! AFL++ target: the text extractors, on inputs detection assigns to them.

fn main() {
    asset_probe_fuzz::run(asset_probe_fuzz::Target::Text);
}
