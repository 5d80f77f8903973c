//! NRRD (`.nrrd`, and `.nhdr`, a detached header): a text header of `field: value`
//! lines after the `NRRD000N` magic, ended by a blank line (or the end of a detached
//! header). `sizes` gives each axis; `kinds`, when present, tells the axes of space and
//! time from those of components (an RGB or vector axis first is not the width). Read
//! up to [`MAX_HEADER_BYTES`]; the data after it never.

use std::io::Read;

use asset_core::Limits;

use super::Extent;
use crate::{ProbeError, Result, Source};

const NAME: &str = "NRRD";
/// The most header bytes read: real headers are a few hundred bytes; 64 KiB leaves room
/// for long comments and key/value pairs.
const MAX_HEADER_BYTES: u64 = 64 * 1024;
/// NRRD's own limit on axes (NRRD_DIM_MAX).
const MAX_AXES: usize = 16;

/// `NRRD0001` to `NRRD0005` and the end of that line.
pub(crate) fn magic(h: &[u8]) -> bool {
    h.len() >= 9
        && h.starts_with(b"NRRD000")
        && (b'1'..=b'5').contains(&h[7])
        && matches!(h[8], b'\n' | b'\r')
}

/// Kinds of axes that are not space or time: a component axis (color, vector, tensor).
fn is_component(kind: &str) -> bool {
    !matches!(kind, "domain" | "space" | "time" | "???" | "none")
}

pub(super) fn extent(src: &Source, _limits: &Limits) -> Result<Extent> {
    let mut header = Vec::new();
    src.reader()?.take(MAX_HEADER_BYTES.min(src.size())).read_to_end(&mut header)?;
    // The header ends at the first blank line; a detached header may end with the file.
    let end = header
        .windows(2)
        .position(|w| w == b"\n\n")
        .or_else(|| header.windows(3).position(|w| w == b"\n\r\n"));
    let header = match end {
        Some(end) => &header[..end],
        None if src.size() > MAX_HEADER_BYTES => {
            return Err(ProbeError::TooLarge { what: "NRRD header".into(), limit: MAX_HEADER_BYTES });
        }
        None => &header[..],
    };
    let text = String::from_utf8_lossy(header);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    lines.next(); // the magic
    let (mut dimension, mut sizes, mut kinds) = (None, None, None);
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') || line.contains(":=") {
            continue; // a comment, or a key/value pair
        }
        let Some((field, value)) = line.split_once(": ") else {
            return Err(ProbeError::corrupt(NAME, format!("header line {:?} is no field", trim(line))));
        };
        match field {
            "dimension" => dimension = Some(value.trim().to_string()),
            "sizes" => sizes = Some(value.split_whitespace().map(str::to_string).collect::<Vec<_>>()),
            "kinds" => kinds = Some(value.split_whitespace().map(str::to_string).collect::<Vec<_>>()),
            _ => {}
        }
    }
    let dimension: usize = dimension
        .ok_or_else(|| ProbeError::corrupt(NAME, "no dimension field"))?
        .parse()
        .ok()
        .filter(|d| (1..=MAX_AXES).contains(d))
        .ok_or_else(|| ProbeError::corrupt(NAME, format!("dimension is not 1 to {MAX_AXES}")))?;
    let sizes = sizes.ok_or_else(|| ProbeError::corrupt(NAME, "no sizes field"))?;
    if sizes.len() != dimension {
        return Err(ProbeError::corrupt(NAME, format!("{} sizes for dimension {dimension}", sizes.len())));
    }
    let sizes: Vec<u64> = sizes
        .iter()
        .map(|s| s.parse::<u64>().ok().filter(|&v| v >= 1))
        .collect::<Option<_>>()
        .ok_or_else(|| ProbeError::corrupt(NAME, "a size is not a positive integer"))?;
    let spatial: Vec<u64> = match kinds {
        Some(k) if k.len() == dimension => {
            sizes.iter().zip(&k).filter(|(_, kind)| !is_component(kind)).map(|(s, _)| *s).collect()
        }
        Some(k) => {
            return Err(ProbeError::corrupt(NAME, format!("{} kinds for dimension {dimension}", k.len())));
        }
        None => sizes,
    };
    let axis = |k: usize| spatial.get(k).copied().unwrap_or(1);
    if spatial.is_empty() {
        return Err(ProbeError::corrupt(NAME, "no axis of space or time"));
    }
    Ok(Extent { width: axis(0), height: axis(1), slices: axis(2) })
}

fn trim(line: &str) -> String {
    line.chars().take(40).collect()
}
