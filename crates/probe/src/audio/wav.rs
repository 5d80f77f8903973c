//! WAV (RIFF and RF64): the `fmt ` chunk gives the codec and the layout, the `data`
//! chunk's length the duration. Chunks are walked by their headers only, through a
//! buffered reader (a million empty chunks cost a read per 64 KiB, not two system
//! calls each); a walk stopped by `max_items` says so.

use std::io::{Read, Seek};

use asset_core::Limits;

use super::{Stream, read_at, read_exact_at, u16_le, u32_le, u64_le};
use crate::ranged::WalkReader;
use crate::{ProbeError, Result, Source};

const FORMAT: &str = "wav";

const WAVE_FORMAT_PCM: u16 = 0x0001;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 0x0003;
const WAVE_FORMAT_ALAW: u16 = 0x0006;
const WAVE_FORMAT_MULAW: u16 = 0x0007;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

#[derive(Debug, Clone, Copy)]
struct Fmt {
    tag: u16,
    channels: u16,
    sample_rate: u32,
    byte_rate: u32,
    block_align: u16,
    bits: u16,
}

pub(super) fn probe(src: &Source, limits: &Limits) -> Result<Stream> {
    let mut file = WalkReader::open(src)?;
    let size = src.size();
    let mut riff = [0u8; 12];
    read_exact_at(&mut file, 0, &mut riff, FORMAT, "RIFF header")?;
    let rf64 = &riff[..4] == b"RF64";
    let mut riff_end = 8 + u64::from(u32_le(&riff, 4));

    let mut fmt = None;
    let mut fact_frames = None;
    let mut ds64_data = None;
    let mut data = None; // (offset, declared length)
    let mut pos = 12u64;
    let mut chunks = 0u64;
    while pos.saturating_add(8) <= size {
        if chunks == limits.max_items {
            return Err(ProbeError::TooLarge {
                what: "the number of WAV chunks before the fmt and data chunks".into(),
                limit: limits.max_items,
            });
        }
        chunks += 1;
        let mut head = [0u8; 8];
        read_exact_at(&mut file, pos, &mut head, FORMAT, "chunk header")?;
        let body = pos + 8;
        let len32 = u32_le(&head, 4);
        let mut len = u64::from(len32);
        match &head[..4] {
            b"ds64" if rf64 => {
                let mut b = [0u8; 24];
                read_exact_at(&mut file, body, &mut b, FORMAT, "ds64 chunk")?;
                riff_end = 8u64.saturating_add(u64_le(&b, 0));
                ds64_data = Some(u64_le(&b, 8));
            }
            b"fmt " => fmt = Some(parse_fmt(&mut file, body, len)?),
            b"fact" if len >= 4 => {
                let mut b = [0u8; 4];
                read_exact_at(&mut file, body, &mut b, FORMAT, "fact chunk")?;
                fact_frames = Some(u32_le(&b, 0));
            }
            b"data" => {
                if rf64 && len32 == u32::MAX {
                    len = ds64_data.unwrap_or(len);
                }
                data = Some((body, len));
                // The data chunk is normally last; only a late `fmt ` makes us go on.
                if fmt.is_some() {
                    break;
                }
            }
            _ => {}
        }
        match body.checked_add(len).and_then(|end| end.checked_add(len & 1)) {
            Some(next) => pos = next,
            None => break,
        }
    }

    let ended_early = size < riff_end;
    let missing = |what: &str| {
        if ended_early {
            ProbeError::truncated(FORMAT, format!("the file ends before the {what} chunk"))
        } else {
            ProbeError::corrupt(FORMAT, format!("no {what} chunk"))
        }
    };
    let fmt = fmt.ok_or_else(|| missing("fmt "))?;
    let (data_at, declared) = data.ok_or_else(|| missing("data"))?;
    if fmt.channels == 0 || fmt.sample_rate == 0 {
        return Err(ProbeError::corrupt(FORMAT, "zero channels or zero sample rate"));
    }
    let codec = codec_name(&fmt)?;
    // A data chunk cut short (or streamed, with a length of 0xFFFFFFFF) plays what is
    // there: ffprobe reports that shorter duration, and so do we.
    let present = declared.min(size.saturating_sub(data_at));
    let duration = if is_pcm(fmt.tag) && fmt.block_align > 0 {
        let frames = present / u64::from(fmt.block_align);
        Some(frames as f64 / f64::from(fmt.sample_rate))
    } else if let Some(frames) = fact_frames.filter(|_| present == declared) {
        Some(f64::from(frames) / f64::from(fmt.sample_rate))
    } else if fmt.byte_rate > 0 {
        Some(present as f64 / f64::from(fmt.byte_rate))
    } else {
        None
    };
    Ok(Stream {
        mime: "audio/wav",
        codec,
        sample_rate: fmt.sample_rate,
        channels: Some(u32::from(fmt.channels)),
        duration,
    })
}

fn parse_fmt<R: Read + Seek>(file: &mut R, at: u64, len: u64) -> Result<Fmt> {
    if len < 16 {
        return Err(ProbeError::corrupt(FORMAT, format!("fmt chunk of {len} bytes, at least 16 needed")));
    }
    let mut b = [0u8; 40];
    let want = len.min(40) as usize;
    let got = read_at(file, at, &mut b[..want])?;
    if got < 16 {
        return Err(ProbeError::truncated(FORMAT, "the file ends inside the fmt chunk"));
    }
    let mut tag = u16_le(&b, 0);
    // WAVE_FORMAT_EXTENSIBLE: the real format is the first two bytes of the SubFormat GUID.
    if tag == WAVE_FORMAT_EXTENSIBLE {
        if got < 40 {
            return Err(ProbeError::truncated(FORMAT, "the file ends inside WAVE_FORMAT_EXTENSIBLE"));
        }
        tag = u16_le(&b, 24);
    }
    Ok(Fmt {
        tag,
        channels: u16_le(&b, 2),
        sample_rate: u32_le(&b, 4),
        byte_rate: u32_le(&b, 8),
        block_align: u16_le(&b, 12),
        bits: u16_le(&b, 14),
    })
}

fn is_pcm(tag: u16) -> bool {
    matches!(tag, WAVE_FORMAT_PCM | WAVE_FORMAT_IEEE_FLOAT | WAVE_FORMAT_ALAW | WAVE_FORMAT_MULAW)
}

/// ffprobe's name for the codec; PCM by container bits rounded up to whole bytes, as
/// ffmpeg does.
fn codec_name(fmt: &Fmt) -> Result<&'static str> {
    let bytes = fmt.bits.div_ceil(8);
    let name = match (fmt.tag, bytes) {
        (WAVE_FORMAT_PCM, 1) => "pcm_u8",
        (WAVE_FORMAT_PCM, 2) => "pcm_s16le",
        (WAVE_FORMAT_PCM, 3) => "pcm_s24le",
        (WAVE_FORMAT_PCM, 4) => "pcm_s32le",
        (WAVE_FORMAT_PCM, 8) => "pcm_s64le",
        (WAVE_FORMAT_IEEE_FLOAT, 4) => "pcm_f32le",
        (WAVE_FORMAT_IEEE_FLOAT, 8) => "pcm_f64le",
        (WAVE_FORMAT_ALAW, _) => "pcm_alaw",
        (WAVE_FORMAT_MULAW, _) => "pcm_mulaw",
        (0x0002, _) => "adpcm_ms",
        (0x0011, _) => "adpcm_ima_wav",
        (0x0031, _) => "gsm_ms",
        (0x0050, _) => "mp2",
        (0x0055, _) => "mp3",
        (tag, _) => {
            return Err(ProbeError::unsupported(format!("WAV codec tag {tag:#06x} with {} bits", fmt.bits)));
        }
    };
    Ok(name)
}
