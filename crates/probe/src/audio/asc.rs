//! The MPEG-4 AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1), read for what a decoder
//! outputs: HE-AAC (SBR) and HE-AACv2 (PS) are signalled there either hierarchically
//! (object type 5 or 29 first) or backward-compatibly (a sync extension after the core
//! config), and `mp4parse` 0.17 reads neither into the rate and channels it reports.
//! A few dozen bits of a config already in memory, read with bounds checks only.

use std::fmt;

const RATES: [u32; 13] =
    [96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000, 7_350];

const AOT_SBR: u32 = 5;
const AOT_PS: u32 = 29;
const SYNC_SBR: u32 = 0x2b7;
const SYNC_PS: u32 = 0x548;

/// Why a config cannot be read: no decoder could play it, so neither can we report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AscError {
    /// The config ends inside the named field.
    CutShort(&'static str),
    /// A field holds a value the standard reserves or no stream has.
    Invalid(String),
}

impl fmt::Display for AscError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AscError::CutShort(field) => write!(f, "the AudioSpecificConfig ends inside its {field}"),
            AscError::Invalid(what) => write!(f, "the AudioSpecificConfig {what}"),
        }
    }
}

/// SBR as the config signals it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sbr {
    /// Not mentioned: only the frames can tell (implicit signalling).
    Unsignalled,
    /// Explicitly absent (`sbrPresentFlag` 0 in a sync extension).
    Absent,
    /// Explicitly present, with the extension (output) sampling frequency.
    Present { rate: u32 },
}

/// What an AudioSpecificConfig says about the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AudioConfig {
    /// The core object type (2 for AAC-LC), after any SBR/PS wrapper.
    pub object_type: u32,
    pub core_rate: u32,
    /// `None` for a reserved channel configuration.
    pub core_channels: Option<u32>,
    pub sbr: Sbr,
    /// `Some(true)` for object type 29 or `psPresentFlag` 1; `None` when unsignalled.
    pub ps: Option<bool>,
}

impl AudioConfig {
    /// Whether the core is an AAC the SBR/PS extensions apply to.
    pub fn is_aac(&self) -> bool {
        matches!(self.object_type, 1..=4 | 6 | 7 | 17 | 19..=23)
    }

    /// The sample rate and channels a decoder outputs, as ffprobe 5.1 reports them (it
    /// decodes a frame). SBR doubles the core rate when the extension frequency is above
    /// it, whatever that frequency says (22050 Hz with a 48000 Hz extension plays at
    /// 44100, as FFmpeg's decoder sets it); at or below the core rate ("downsampled
    /// SBR") the core rate stays. A mono core with SBR plays
    /// as stereo unless PS is explicitly absent: FFmpeg's decoder assumes PS whenever
    /// SBR is on and PS unsignalled (`if (m4ac->sbr == 1 && m4ac->ps == -1) ps = 1`),
    /// which is what ffprobe reports; mediainfo says 1 channel there, we follow the
    /// player as `adts.rs` does.
    pub fn output(&self) -> (u32, Option<u32>) {
        match self.sbr {
            Sbr::Present { rate } => {
                let channels = match (self.core_channels, self.ps) {
                    (Some(1), Some(true) | None) => Some(2),
                    (other, _) => other,
                };
                let rate =
                    if rate > self.core_rate { self.core_rate.saturating_mul(2) } else { self.core_rate };
                (rate, channels)
            }
            Sbr::Unsignalled | Sbr::Absent => {
                let channels = match (self.core_channels, self.ps) {
                    (Some(1), Some(true)) => Some(2),
                    (other, _) => other,
                };
                (self.core_rate, channels)
            }
        }
    }
}

impl AudioConfig {
    /// Whether only the frames can say if SBR is on: an AAC config that signals
    /// neither SBR nor PS (implicit signalling, which ffprobe resolves by decoding).
    pub fn sbr_in_frames_only(&self) -> bool {
        self.is_aac() && self.sbr == Sbr::Unsignalled && self.ps.is_none()
    }

    /// What a decoder outputs once the frames have shown SBR: twice the core rate, and
    /// a mono core as stereo (FFmpeg assumes PS, as in [`AudioConfig::output`]).
    pub fn output_with_implicit_sbr(&self) -> (u32, Option<u32>) {
        let channels = match self.core_channels {
            Some(1) => Some(2),
            other => other,
        };
        (self.core_rate.saturating_mul(2), channels)
    }
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn left(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.pos)
    }

    /// Up to 32 bits, most significant first.
    fn read(&mut self, n: usize, field: &'static str) -> Result<u32, AscError> {
        debug_assert!(n <= 32);
        if n > self.left() {
            return Err(AscError::CutShort(field));
        }
        let mut v = 0u32;
        for _ in 0..n {
            let bit = (self.data[self.pos / 8] >> (7 - self.pos % 8)) & 1;
            v = (v << 1) | u32::from(bit);
            self.pos += 1;
        }
        Ok(v)
    }

    fn skip(&mut self, n: usize, field: &'static str) -> Result<(), AscError> {
        if n > self.left() {
            return Err(AscError::CutShort(field));
        }
        self.pos += n;
        Ok(())
    }

    fn object_type(&mut self) -> Result<u32, AscError> {
        match self.read(5, "audio object type")? {
            31 => Ok(32 + self.read(6, "escaped audio object type")?),
            n => Ok(n),
        }
    }

    /// A sampling frequency index and, for index 15, the 24-bit frequency itself.
    fn rate(&mut self, field: &'static str) -> Result<u32, AscError> {
        let index = self.read(4, field)?;
        let rate = match index {
            15 => self.read(24, field)?,
            i => *RATES
                .get(i as usize)
                .ok_or_else(|| AscError::Invalid(format!("has the reserved {field} index {i}")))?,
        };
        if rate == 0 {
            return Err(AscError::Invalid(format!("declares a {field} of 0 Hz")));
        }
        Ok(rate)
    }
}

/// Reads an AudioSpecificConfig. Object types whose specific config we do not know
/// keep their core values: only after a GASpecificConfig can a sync extension follow.
pub(crate) fn read(config: &[u8]) -> Result<AudioConfig, AscError> {
    let mut b = Bits { data: config, pos: 0 };
    let mut object_type = b.object_type()?;
    let core_rate = b.rate("sampling frequency")?;
    let channel_config = b.read(4, "channel configuration")?;
    let mut sbr = Sbr::Unsignalled;
    let mut ps = None;
    if object_type == AOT_SBR || object_type == AOT_PS {
        ps = (object_type == AOT_PS).then_some(true);
        sbr = Sbr::Present { rate: b.rate("extension sampling frequency")? };
        object_type = b.object_type()?;
        if object_type == AOT_SBR || object_type == AOT_PS {
            return Err(AscError::Invalid(format!("wraps SBR around object type {object_type}")));
        }
        if object_type == 22 {
            b.skip(4, "extension channel configuration")?;
        }
    }
    let mut config = AudioConfig { object_type, core_rate, core_channels: None, sbr, ps };
    if !config.is_aac() {
        config.core_channels = channels_of(channel_config);
        return Ok(config);
    }
    config.core_channels = ga_specific_config(&mut b, object_type, channel_config)?;
    if matches!(object_type, 17 | 19..=27) {
        b.skip(2, "epConfig")?;
    }
    if sbr == Sbr::Unsignalled
        && b.left() >= 16
        && b.read(11, "sync extension type")? == SYNC_SBR
        && b.object_type()? == AOT_SBR
    {
        if b.read(1, "sbrPresentFlag")? == 1 {
            let rate = b.rate("extension sampling frequency")?;
            config.sbr = Sbr::Present { rate };
            if b.left() >= 12 && b.read(11, "sync extension type")? == SYNC_PS {
                config.ps = Some(b.read(1, "psPresentFlag")? == 1);
            }
        } else {
            config.sbr = Sbr::Absent;
        }
    }
    Ok(config)
}

/// Channels of a channel configuration (0 is read from the program config element).
fn channels_of(config: u32) -> Option<u32> {
    match config {
        1..=6 => Some(config),
        7 | 12 | 14 => Some(8),
        11 => Some(7),
        13 => Some(24),
        _ => None,
    }
}

/// Reads a GASpecificConfig up to its end (so that a sync extension can follow) and
/// returns the core's channels.
fn ga_specific_config(
    b: &mut Bits<'_>,
    object_type: u32,
    channel_config: u32,
) -> Result<Option<u32>, AscError> {
    b.skip(1, "frameLengthFlag")?;
    if b.read(1, "dependsOnCoreCoder")? == 1 {
        b.skip(14, "coreCoderDelay")?;
    }
    let extension = b.read(1, "extensionFlag")?;
    let channels = match channel_config {
        0 => Some(program_config_element(b)?),
        c => channels_of(c),
    };
    if object_type == 6 || object_type == 20 {
        b.skip(3, "layerNr")?;
    }
    if extension == 1 {
        if object_type == 22 {
            b.skip(16, "numOfSubFrame and layer_length")?;
        }
        if matches!(object_type, 17 | 19 | 20 | 23) {
            b.skip(3, "resilience flags")?;
        }
        b.skip(1, "extensionFlag3")?;
    }
    Ok(channels)
}

/// A program_config_element (§4.4.1.1): every count is a 2–4 bit field, so it is at
/// most a few hundred bits and a 255-byte comment. Returns its channel count.
fn program_config_element(b: &mut Bits<'_>) -> Result<u32, AscError> {
    const F: &str = "program config element";
    b.skip(10, F)?;
    let front = b.read(4, F)?;
    let side = b.read(4, F)?;
    let back = b.read(4, F)?;
    let lfe = b.read(2, F)?;
    let assoc = b.read(3, F)?;
    let cc = b.read(4, F)?;
    // Mono and stereo mixdown element numbers (4 bits each), matrix mixdown index and
    // pseudo-surround flag (2 + 1), each behind its present flag.
    for width in [4, 4, 3] {
        if b.read(1, F)? == 1 {
            b.skip(width, F)?;
        }
    }
    let mut channels = 0;
    for _ in 0..front + side + back {
        channels += if b.read(1, F)? == 1 { 2 } else { 1 };
        b.skip(4, F)?;
    }
    channels += lfe;
    b.skip(4 * (lfe + assoc) as usize + 5 * cc as usize, F)?;
    // byte_alignment() relative to the start of the config.
    b.skip((8 - b.pos % 8) % 8, F)?;
    let comment = b.read(8, F)?;
    b.skip(8 * comment as usize, F)?;
    if channels == 0 {
        return Err(AscError::Invalid("has a program config element of no channels".into()));
    }
    Ok(channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config from (value, width) fields, zero-padded to a byte.
    fn cfg(fields: &[(u32, usize)]) -> Vec<u8> {
        let mut bits: Vec<u8> = Vec::new();
        for &(v, w) in fields {
            bits.extend((0..w).rev().map(|i| ((v >> i) & 1) as u8));
        }
        bits.resize(bits.len().div_ceil(8) * 8, 0);
        bits.chunks(8).map(|c| c.iter().fold(0, |b, &x| (b << 1) | x)).collect()
    }

    const GA: [(u32, usize); 3] = [(0, 1), (0, 1), (0, 1)];
    /// AAC-LC, 22050 Hz (index 7), mono.
    const LC_22K_MONO: [(u32, usize); 3] = [(2, 5), (7, 4), (1, 4)];

    fn lc_with(tail: &[(u32, usize)]) -> Vec<u8> {
        cfg(&[&LC_22K_MONO[..], &GA, tail].concat())
    }

    #[test]
    fn plain_aac_lc_plays_at_its_core_rate() {
        // ffmpeg's usual 44.1 kHz stereo config, 0x12 0x10.
        let c = read(&[0x12, 0x10]).unwrap();
        assert_eq!(
            (c.object_type, c.core_rate, c.core_channels, c.sbr),
            (2, 44_100, Some(2), Sbr::Unsignalled)
        );
        assert_eq!(c.output(), (44_100, Some(2)));
        assert_eq!(read(&lc_with(&[])).unwrap().output(), (22_050, Some(1)));
    }

    #[test]
    fn hierarchical_sbr_doubles_the_rate_and_assumes_ps_for_mono() {
        let he = read(&cfg(&[&[(5, 5), (7, 4), (1, 4), (4, 4), (2, 5)][..], &GA].concat())).unwrap();
        assert_eq!((he.object_type, he.sbr, he.ps), (2, Sbr::Present { rate: 44_100 }, None));
        // ffprobe 5.1: HE-AAC, 44100 Hz, 2 channels (PS assumed with explicit SBR).
        assert_eq!(he.output(), (44_100, Some(2)));
        let v2 = read(&cfg(&[&[(29, 5), (7, 4), (1, 4), (4, 4), (2, 5)][..], &GA].concat())).unwrap();
        assert_eq!((v2.sbr, v2.ps), (Sbr::Present { rate: 44_100 }, Some(true)));
        assert_eq!(v2.output(), (44_100, Some(2)));
        // Stereo stays stereo.
        let st = read(&cfg(&[&[(5, 5), (6, 4), (2, 4), (3, 4), (2, 5)][..], &GA].concat())).unwrap();
        assert_eq!(st.output(), (48_000, Some(2)));
        // ffprobe: a 48 kHz extension over a 22.05 kHz core plays at 2 × 22050.
        let odd = read(&cfg(&[&[(5, 5), (7, 4), (1, 4), (3, 4), (2, 5)][..], &GA].concat())).unwrap();
        assert_eq!(odd.output().0, 44_100);
        // Downsampled SBR (extension at the core rate) keeps the core rate.
        let down = read(&cfg(&[&[(5, 5), (7, 4), (2, 4), (7, 4), (2, 5)][..], &GA].concat())).unwrap();
        assert_eq!(down.output(), (22_050, Some(2)));
    }

    #[test]
    fn backward_compatible_sync_extensions_are_read() {
        let sbr_ps = read(&lc_with(&[(0x2B7, 11), (5, 5), (1, 1), (4, 4), (0x548, 11), (1, 1)])).unwrap();
        assert_eq!((sbr_ps.sbr, sbr_ps.ps), (Sbr::Present { rate: 44_100 }, Some(true)));
        assert_eq!(sbr_ps.output(), (44_100, Some(2)));
        // ffprobe: psPresentFlag 0 keeps mono; no 0x548 at all assumes PS.
        let no_ps = read(&lc_with(&[(0x2B7, 11), (5, 5), (1, 1), (4, 4), (0x548, 11), (0, 1)])).unwrap();
        assert_eq!(no_ps.output(), (44_100, Some(1)));
        let unsaid = read(&lc_with(&[(0x2B7, 11), (5, 5), (1, 1), (4, 4)])).unwrap();
        assert_eq!(unsaid.output(), (44_100, Some(2)));
        // ffprobe: "SBR signaled to be not-present", LC 22050 Hz mono.
        let absent = read(&lc_with(&[(0x2B7, 11), (5, 5), (0, 1), (0, 4)])).unwrap();
        assert_eq!((absent.sbr, absent.output()), (Sbr::Absent, (22_050, Some(1))));
        // Another sync extension type is not SBR.
        let other = read(&lc_with(&[(0x123, 11), (5, 5), (1, 1), (4, 4)])).unwrap();
        assert_eq!(other.sbr, Sbr::Unsignalled);
    }

    #[test]
    fn a_program_config_element_gives_the_channels_and_is_skipped_whole() {
        // Channel config 0, then the PCE: tag, profile, index (10 bits), 1 front CPE,
        // 1 side SCE, no back, 1 LFE, no assoc, no cc, no mixdowns, elements, then byte
        // alignment and an empty comment; then a sync extension.
        let pce: Vec<(u32, usize)> = vec![
            (0, 10),
            (1, 4),
            (1, 4),
            (0, 4),
            (1, 2),
            (0, 3),
            (0, 4),
            (0, 1),
            (0, 1),
            (0, 1),
            (1, 1),
            (0, 4),
            (0, 1),
            (1, 4),
            (2, 4),
        ];
        let head = [(2u32, 5usize), (3, 4), (0, 4)];
        let mut fields: Vec<(u32, usize)> = [&head[..], &GA, &pce].concat();
        let used: usize = fields.iter().map(|f| f.1).sum();
        fields.push((0, (8 - used % 8) % 8));
        fields.extend([(0, 8), (0x2B7, 11), (5, 5), (1, 1), (0, 4)]);
        let c = read(&cfg(&fields)).unwrap();
        assert_eq!(c.core_channels, Some(4));
        assert_eq!((c.sbr, c.output()), (Sbr::Present { rate: 96_000 }, (96_000, Some(4))));
    }

    #[test]
    fn hostile_configs_are_errors_or_sane_never_panics() {
        // Reserved index 15 with an explicit frequency of 0 (mp4parse: 8000 Hz; ffprobe:
        // "invalid sampling rate index 15").
        let zero = cfg(&[&[(2, 5), (15, 4), (0, 24), (1, 4)][..], &GA].concat());
        assert!(matches!(read(&zero), Err(AscError::Invalid(_))), "{:?}", read(&zero));
        // The same in the extension frequency.
        let ext_zero = cfg(&[&[(5, 5), (7, 4), (1, 4), (15, 4), (0, 24), (2, 5)][..], &GA].concat());
        assert!(matches!(read(&ext_zero), Err(AscError::Invalid(_))));
        // Reserved indexes 13 and 14.
        assert!(matches!(read(&cfg(&[(2, 5), (13, 4), (1, 4)])), Err(AscError::Invalid(_))));
        assert!(matches!(read(&lc_with(&[(0x2B7, 11), (5, 5), (1, 1), (14, 4)])), Err(AscError::Invalid(_))));
        // SBR around SBR.
        assert!(read(&cfg(&[&[(5, 5), (7, 4), (1, 4), (4, 4), (29, 5)][..], &GA].concat())).is_err());
        // An absurd explicit frequency is read as it is: the plausibility check, not
        // this reader, refuses 16 MHz.
        let huge = read(&cfg(&[&[(2, 5), (15, 4), (0xFF_FFFF, 24), (2, 4)][..], &GA].concat())).unwrap();
        assert_eq!(huge.output(), (0xFF_FFFF, Some(2)));
        // Unknown (escaped) object types and reserved channel configurations keep what
        // can be read.
        let escaped = read(&cfg(&[(31, 5), (10, 6), (4, 4), (15, 4)])).unwrap();
        assert_eq!((escaped.object_type, escaped.core_channels, escaped.is_aac()), (42, None, false));
        // A PCE of no channels.
        let empty_pce = cfg(&[&[(2, 5), (4, 4), (0, 4)][..], &GA, &[(0, 32), (0, 32)]].concat());
        assert!(matches!(read(&empty_pce), Err(AscError::Invalid(_))));
    }

    #[test]
    fn a_config_cut_in_any_field_is_cut_short() {
        let full = cfg(
            &[&[(29, 5), (15, 4), (22_050, 24), (1, 4), (15, 4), (44_100, 24), (2, 5)][..], &GA].concat()
        );
        assert!(read(&full).is_ok());
        for n in 0..full.len() - 1 {
            assert!(
                matches!(read(&full[..n]), Err(AscError::CutShort(_))),
                "cut at {n}: {:?}",
                read(&full[..n])
            );
        }
        // A PCE whose comment claims 255 bytes it does not have.
        let comment =
            cfg(&[&[(2, 5), (4, 4), (0, 4)][..], &GA, &[(0, 10), (1, 4), (0, 18), (0, 5), (0, 1), (255, 8)]]
                .concat());
        assert!(matches!(read(&comment), Err(AscError::CutShort(_))), "{:?}", read(&comment));
        // Every byte string up to 3 bytes: an answer or an error, never a panic.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let _ = read(&[a, b]);
                let _ = read(&[a, b, 0xFF]);
            }
        }
    }
}
