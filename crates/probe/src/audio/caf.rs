//! CAF (Apple Core Audio Format): the `desc` chunk gives the rate, channels and codec;
//! the duration is the packet count of `pakt` times the frames per packet, or for
//! constant-size packets (PCM) the `data` size over the packet size, as ffprobe counts
//! them. Chunk headers are stepped over through a buffered reader; a `data` chunk of
//! size −1 runs to the end of the file and is never read.

use asset_core::Limits;

use super::{Stream, read_exact_at, u32_be};
use crate::ranged::WalkReader;
use crate::{ProbeError, Result, Source};

const FORMAT: &str = "caf";

#[derive(Debug, Clone, Copy)]
struct Desc {
    rate: f64,
    format: [u8; 4],
    flags: u32,
    bytes_per_packet: u32,
    frames_per_packet: u32,
    channels: u32,
    bits: u32,
}

pub(super) fn probe(src: &Source, limits: &Limits) -> Result<Stream> {
    let mut file = WalkReader::open(src)?;
    let size = src.size();
    let mut head = [0u8; 8];
    read_exact_at(&mut file, 0, &mut head, FORMAT, "file header")?;
    if &head[..4] != b"caff" {
        return Err(ProbeError::corrupt(FORMAT, "no caff signature"));
    }
    let mut desc: Option<Desc> = None;
    let mut packets: Option<u64> = None;
    let mut data_len: Option<u64> = None;
    let mut pos = 8u64;
    let mut chunks = 0u64;
    while pos.saturating_add(12) <= size {
        if chunks == limits.max_items {
            return Err(ProbeError::TooLarge {
                what: "the number of CAF chunks".into(),
                limit: limits.max_items,
            });
        }
        chunks += 1;
        let mut h = [0u8; 12];
        read_exact_at(&mut file, pos, &mut h, FORMAT, "chunk header")?;
        let declared = i64::from_be_bytes(h[4..12].try_into().unwrap_or_default());
        let body = pos + 12;
        match &h[..4] {
            b"desc" => {
                let mut d = [0u8; 32];
                read_exact_at(&mut file, body, &mut d, FORMAT, "desc chunk")?;
                desc = Some(Desc {
                    rate: f64::from_be_bytes(d[..8].try_into().unwrap_or_default()),
                    format: d[8..12].try_into().unwrap_or_default(),
                    flags: u32_be(&d, 12),
                    bytes_per_packet: u32_be(&d, 16),
                    frames_per_packet: u32_be(&d, 20),
                    channels: u32_be(&d, 24),
                    bits: u32_be(&d, 28),
                });
            }
            b"pakt" => {
                let mut p = [0u8; 8];
                read_exact_at(&mut file, body, &mut p, FORMAT, "pakt chunk")?;
                packets = u64::try_from(i64::from_be_bytes(p)).ok();
            }
            b"data" => {
                // Size −1: the audio runs to the end of the file (the last chunk).
                let len = if declared == -1 { size.saturating_sub(body) } else { declared.max(0) as u64 };
                // The first 4 bytes are the edit count.
                data_len = Some(len.saturating_sub(4).min(size.saturating_sub(body + 4)));
                if declared == -1 {
                    break;
                }
            }
            _ => {}
        }
        let done = desc.is_some_and(|d| packets.is_some() || (data_len.is_some() && d.bytes_per_packet > 0));
        if done {
            break;
        }
        let Ok(len) = u64::try_from(declared) else { break };
        match body.checked_add(len) {
            Some(next) if next > pos => pos = next,
            _ => break,
        }
    }
    let d = desc.ok_or_else(|| {
        if pos >= size {
            ProbeError::truncated(FORMAT, "the file ends before the desc chunk")
        } else {
            ProbeError::corrupt(FORMAT, "no desc chunk")
        }
    })?;
    if !(d.rate.is_finite() && d.rate >= 1.0 && d.rate <= 1e7) || d.channels == 0 {
        return Err(ProbeError::corrupt(FORMAT, "a desc chunk with an impossible rate or no channels"));
    }
    let frames = match (packets, d.frames_per_packet, data_len, d.bytes_per_packet) {
        (Some(n), fpp, _, _) if fpp > 0 => Some(n as f64 * f64::from(fpp)),
        (_, fpp, Some(len), bpp) if bpp > 0 => Some((len / u64::from(bpp)) as f64 * f64::from(fpp.max(1))),
        _ => None,
    };
    Ok(Stream {
        mime: "audio/x-caf",
        codec: codec(&d),
        sample_rate: d.rate.round() as u32,
        channels: Some(d.channels),
        duration: frames.map(|f| f / d.rate),
    })
}

/// ffprobe's codec name for a CAF format id (and, for PCM, its flags and sample size).
fn codec(d: &Desc) -> &'static str {
    match &d.format {
        b"lpcm" => {
            let float = d.flags & 1 != 0;
            let le = d.flags & 2 != 0;
            match (float, d.bits, le) {
                (true, 32, true) => "pcm_f32le",
                (true, 32, false) => "pcm_f32be",
                (true, 64, true) => "pcm_f64le",
                (true, 64, false) => "pcm_f64be",
                (false, 8, _) => "pcm_s8",
                (false, 16, true) => "pcm_s16le",
                (false, 16, false) => "pcm_s16be",
                (false, 24, true) => "pcm_s24le",
                (false, 24, false) => "pcm_s24be",
                (false, 32, true) => "pcm_s32le",
                (false, 32, false) => "pcm_s32be",
                _ => "pcm",
            }
        }
        b"alac" => "alac",
        b"aac " => "aac",
        b"ulaw" => "pcm_mulaw",
        b"alaw" => "pcm_alaw",
        b"ima4" => "adpcm_ima_qt",
        b".mp3" => "mp3",
        b".mp2" => "mp2",
        b"opus" => "opus",
        b"flac" => "flac",
        b"samr" => "amr_nb",
        b"ac-3" => "ac3",
        _ => "unknown",
    }
}
