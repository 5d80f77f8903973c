//! Stream filters for the only streams the probe decodes, xref streams and object
//! streams: FlateDecode with PNG or TIFF predictors is what writers use for them. The
//! output is capped, so a deflate bomb stops at the cap instead of filling memory.

use std::io::Read;

use flate2::read::{DeflateDecoder, ZlibDecoder};

use super::syntax::{Dict, Object};
use super::{Failure, Res, broken};
use crate::ProbeError;

/// Decodes `raw` through the stream's `/Filter` chain into at most `cap` bytes.
pub(crate) fn decode(raw: Vec<u8>, dict: &Dict, cap: usize) -> Res<Vec<u8>> {
    let filters: Vec<&[u8]> = match dict.get(b"Filter") {
        None | Some(Object::Null) => Vec::new(),
        Some(Object::Name(n)) => vec![n],
        Some(Object::Array(items)) => items
            .iter()
            .map(|i| match i {
                Object::Name(n) => Ok(&n[..]),
                _ => Err(broken("a /Filter entry is not a name")),
            })
            .collect::<Res<_>>()?,
        Some(_) => return Err(broken("/Filter is neither a name nor an array")),
    };
    let params = |i: usize| -> Option<&Dict> {
        match dict.get(b"DecodeParms") {
            Some(Object::Dict(d)) if i == 0 => Some(d),
            Some(Object::Array(items)) => items.get(i).and_then(Object::as_dict),
            _ => None,
        }
    };
    let mut data = raw;
    for (i, filter) in filters.iter().enumerate() {
        data = match *filter {
            b"FlateDecode" | b"Fl" => predict(inflate(&data, cap)?, params(i))?,
            // Decryption happened before decoding.
            b"Crypt" => data,
            other => return Err(broken(format!("unsupported stream filter /{}", other.escape_ascii()))),
        };
    }
    if data.len() > cap {
        return Err(too_large(cap));
    }
    Ok(data)
}

fn too_large(cap: usize) -> Failure {
    Failure::Final(ProbeError::TooLarge { what: "a decoded PDF stream".into(), limit: cap as u64 })
}

/// Inflates zlib data (or raw deflate, which some writers emit) into at most `cap`
/// bytes. A stream damaged near its end keeps what decoded before the damage, as
/// readers do.
fn inflate(data: &[u8], cap: usize) -> Res<Vec<u8>> {
    fn run(mut reader: impl Read, cap: usize) -> Result<Vec<u8>, (Vec<u8>, Option<Failure>)> {
        let mut out = Vec::new();
        // Small reads: a read that meets damage returns an error and loses what it
        // inflated, so the less each read asks for, the more of a damaged stream is kept.
        let mut chunk = [0u8; 512];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => return Ok(out),
                Ok(n) => {
                    if out.len() + n > cap {
                        return Err((Vec::new(), Some(too_large(cap))));
                    }
                    out.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err((out, None)),
            }
        }
    }
    // Raw deflate after a zlib header that fails (a damaged checksum), or from the start.
    let raw = if data.len() > 2 && data[0] & 0x0f == 8 { &data[2..] } else { data };
    match run(ZlibDecoder::new(data), cap) {
        Ok(out) => Ok(out),
        Err((_, Some(fail))) => Err(fail),
        Err((out, None)) if !out.is_empty() => Ok(out),
        Err(_) => match run(DeflateDecoder::new(raw), cap) {
            Ok(out) => Ok(out),
            Err((_, Some(fail))) => Err(fail),
            Err((out, None)) if !out.is_empty() => Ok(out),
            Err(_) => Err(broken("a FlateDecode stream does not inflate")),
        },
    }
}

/// Undoes a PNG (10–15) or TIFF (2) predictor in place; other values mean none.
fn predict(mut data: Vec<u8>, params: Option<&Dict>) -> Res<Vec<u8>> {
    let Some(params) = params else { return Ok(data) };
    let predictor = params.int(b"Predictor").unwrap_or(1);
    if predictor < 2 {
        return Ok(data);
    }
    let field = |key: &[u8], default: i64, max: i64| -> Res<u64> {
        match params.int(key).unwrap_or(default) {
            v @ 1.. if v <= max => Ok(v as u64),
            v => Err(broken(format!("predictor /{} {v}", key.escape_ascii()))),
        }
    };
    let colors = field(b"Colors", 1, 32)?;
    let bits = field(b"BitsPerComponent", 8, 16)?;
    let columns = field(b"Columns", 1, 1 << 24)?;
    let row = usize::try_from((colors * bits * columns).div_ceil(8)).unwrap_or(usize::MAX);
    let bpp = usize::try_from((colors * bits).div_ceil(8)).unwrap_or(1);
    if predictor == 2 {
        if bits != 8 {
            return Err(broken(format!("TIFF predictor with {bits} bits per component")));
        }
        for line in data.chunks_mut(row) {
            for i in bpp..line.len() {
                line[i] = line[i].wrapping_add(line[i - bpp]);
            }
        }
        return Ok(data);
    }
    // PNG: each row is a filter-type byte and `row` bytes; the output is the rows alone.
    let mut out = Vec::with_capacity(data.len() / (row + 1) * row);
    let mut prev = vec![0u8; row];
    for line in data.chunks(row + 1) {
        if line.len() < row + 1 {
            break;
        }
        let (kind, src) = (line[0], &line[1..]);
        let start = out.len();
        for i in 0..row {
            let left = if i >= bpp { out[start + i - bpp] } else { 0 };
            let up = prev[i];
            let up_left = if i >= bpp { prev[i - bpp] } else { 0 };
            let v = match kind {
                0 => src[i],
                1 => src[i].wrapping_add(left),
                2 => src[i].wrapping_add(up),
                3 => src[i].wrapping_add(((u16::from(left) + u16::from(up)) / 2) as u8),
                4 => src[i].wrapping_add(paeth(left, up, up_left)),
                _ => return Err(broken(format!("PNG predictor row type {kind}"))),
            };
            out.push(v);
        }
        prev.copy_from_slice(&out[start..]);
    }
    data.clear();
    Ok(out)
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = ((p - i16::from(a)).abs(), (p - i16::from(b)).abs(), (p - i16::from(c)).abs());
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn dict(entries: Vec<(&[u8], Object)>) -> Dict {
        Dict(entries.into_iter().map(|(k, v)| (k.to_vec().into_boxed_slice(), v)).collect())
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn flate_with_png_up_predictor() {
        // Two rows of 3 bytes, the second "Up"-predicted from the first.
        let encoded = zlib(&[2, 1, 2, 3, 2, 1, 1, 1]);
        let params = dict(vec![(b"Predictor", Object::Int(12)), (b"Columns", Object::Int(3))]);
        let d = dict(vec![
            (b"Filter", Object::Name(b"FlateDecode".to_vec().into())),
            (b"DecodeParms", Object::Dict(params)),
        ]);
        assert_eq!(decode(encoded, &d, 1024).unwrap(), vec![1, 2, 3, 2, 3, 4]);
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_cap() {
        let bomb = zlib(&vec![0u8; 10 << 20]);
        let d = dict(vec![(b"Filter", Object::Name(b"FlateDecode".to_vec().into()))]);
        let err = decode(bomb, &d, 1 << 20).unwrap_err();
        assert!(matches!(err, Failure::Final(ProbeError::TooLarge { .. })));
    }
}
