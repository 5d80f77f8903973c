//! The coded picture size (and, for H.264, the VUI timing) read from an H.264 or HEVC
//! sequence parameter set, for containers that carry only the elementary stream
//! (MPEG-TS, program streams, FLV's Annex B fallbacks) and so say nothing about size.
//! Hand-written: a few dozen Exp-Golomb fields; every count the SPS declares is bounded
//! by the specification's maximum before it drives a loop, and a short SPS is `None`.

/// What a sequence parameter set says about the pictures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sps {
    /// Cropped (displayed) size, before any sample aspect ratio.
    pub width: u32,
    pub height: u32,
    /// `time_scale / (2 · num_units_in_tick)` when the VUI carries timing (H.264 only).
    pub frame_rate: Option<f64>,
}

/// Reads bits MSB first from an RBSP (emulation prevention already removed).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        debug_assert!(n <= 32);
        let mut v = 0u64;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        u32::try_from(v).ok()
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.pos = self.pos.checked_add(n)?;
        (self.pos <= self.data.len() * 8).then_some(())
    }

    /// Unsigned Exp-Golomb; values past 2^32 − 2 are refused (no field we read is near).
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0u32;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        u32::try_from((1u64 << zeros) - 1 + u64::from(rest)).ok()
    }

    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// Removes emulation prevention bytes (`00 00 03` → `00 00`) from at most `max` bytes
/// of a NAL unit: the SPS fields we read sit in its first hundred bytes or so.
pub(crate) fn rbsp(nal: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len().min(max));
    let mut zeros = 0;
    for &b in nal.iter().take(max) {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// NAL units of an Annex B byte stream (start codes `00 00 01` / `00 00 00 01`), each
/// without its start code. The last one runs to the end of `data`.
pub(crate) fn annex_b_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    // Skip to the first start code.
    match find_start(rest) {
        Some(i) => rest = &rest[i + 3..],
        None => rest = &[],
    }
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let unit = match find_start(rest) {
            Some(i) => {
                let mut end = i;
                // A four-byte start code leaves its leading zero on the unit before.
                while end > 0 && rest[end - 1] == 0 {
                    end -= 1;
                }
                let u = &rest[..end];
                rest = &rest[i + 3..];
                u
            }
            None => std::mem::take(&mut rest),
        };
        Some(unit)
    })
}

fn find_start(d: &[u8]) -> Option<usize> {
    memchr::memmem::find(d, b"\0\0\x01")
}

/// Parses an H.264 SPS NAL unit (header byte included, type 7).
pub(crate) fn h264_sps(nal: &[u8]) -> Option<Sps> {
    if nal.first()? & 0x1F != 7 {
        return None;
    }
    let data = rbsp(&nal[1..], 1024);
    let mut b = Bits::new(&data);
    let profile = b.bits(8)?;
    b.skip(16)?; // constraint flags, level
    b.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(profile, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format_idc = b.ue()?;
        if chroma_format_idc > 3 {
            return None;
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = b.bit()? == 1;
        }
        b.ue()?; // bit_depth_luma_minus8
        b.ue()?; // bit_depth_chroma_minus8
        b.bit()?; // qpprime_y_zero_transform_bypass_flag
        if b.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if b.bit()? == 1 {
                    skip_scaling_list(&mut b, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    b.ue()?; // log2_max_frame_num_minus4
    match b.ue()? {
        0 => {
            b.ue()?;
        }
        1 => {
            b.bit()?;
            b.se()?;
            b.se()?;
            let cycle = b.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                b.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    b.ue()?; // max_num_ref_frames
    b.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(b.ue()?) + 1;
    let height_map_units = u64::from(b.ue()?) + 1;
    let frame_mbs_only = u64::from(b.bit()?);
    if frame_mbs_only == 0 {
        b.bit()?; // mb_adaptive_frame_field_flag
    }
    b.bit()?; // direct_8x8_inference_flag
    let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0u64, 0u64, 0u64, 0u64);
    if b.bit()? == 1 {
        crop_l = b.ue()?.into();
        crop_r = b.ue()?.into();
        crop_t = b.ue()?.into();
        crop_b = b.ue()?.into();
    }
    let chroma_array_type = if separate_colour_plane { 0 } else { chroma_format_idc };
    let (sub_w, sub_h) = match chroma_array_type {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let (unit_x, unit_y) =
        if chroma_array_type == 0 { (1, 2 - frame_mbs_only) } else { (sub_w, sub_h * (2 - frame_mbs_only)) };
    let width = (width_mbs * 16).checked_sub(unit_x * (crop_l + crop_r))?;
    let height = ((2 - frame_mbs_only) * height_map_units * 16).checked_sub(unit_y * (crop_t + crop_b))?;
    let frame_rate = if b.bit().unwrap_or(0) == 1 { h264_vui_frame_rate(&mut b) } else { None };
    Some(Sps { width: u32::try_from(width).ok()?, height: u32::try_from(height).ok()?, frame_rate })
}

fn skip_scaling_list(b: &mut Bits<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + b.se()? + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// The VUI fields up to `timing_info`; `None` when absent or cut.
fn h264_vui_frame_rate(b: &mut Bits<'_>) -> Option<f64> {
    if b.bit()? == 1 && b.bits(8)? == 255 {
        b.skip(32)?; // sar_width, sar_height
    }
    if b.bit()? == 1 {
        b.bit()?; // overscan_appropriate_flag
    }
    if b.bit()? == 1 {
        b.skip(4)?; // video_format, video_full_range_flag
        if b.bit()? == 1 {
            b.skip(24)?; // colour primaries, transfer, matrix
        }
    }
    if b.bit()? == 1 {
        b.ue()?;
        b.ue()?;
    }
    if b.bit()? == 1 {
        let units = b.bits(32)?;
        let scale = b.bits(32)?;
        if units > 0 && scale > 0 {
            return Some(f64::from(scale) / (2.0 * f64::from(units)));
        }
    }
    None
}

/// Parses an HEVC SPS NAL unit (two-byte header included, type 33).
pub(crate) fn hevc_sps(nal: &[u8]) -> Option<Sps> {
    if (nal.first()? >> 1) & 0x3F != 33 || nal.len() < 3 {
        return None;
    }
    let data = rbsp(&nal[2..], 1024);
    let mut b = Bits::new(&data);
    b.skip(4)?; // sps_video_parameter_set_id
    let sub_layers = b.bits(3)? as usize; // sps_max_sub_layers_minus1, at most 7
    b.skip(1)?; // temporal_id_nesting
    // profile_tier_level(1, sub_layers): the general part is 88 bits plus the level.
    b.skip(96)?;
    let mut present = [(false, false); 8];
    for p in present.iter_mut().take(sub_layers) {
        *p = (b.bit()? == 1, b.bit()? == 1);
    }
    if sub_layers > 0 {
        b.skip(2 * (8 - sub_layers))?;
    }
    for &(profile, level) in present.iter().take(sub_layers) {
        if profile {
            b.skip(88)?;
        }
        if level {
            b.skip(8)?;
        }
    }
    b.ue()?; // sps_seq_parameter_set_id
    let chroma_format_idc = b.ue()?;
    if chroma_format_idc > 3 {
        return None;
    }
    let mut separate = false;
    if chroma_format_idc == 3 {
        separate = b.bit()? == 1;
    }
    let width = u64::from(b.ue()?);
    let height = u64::from(b.ue()?);
    let (mut width, mut height) = (width, height);
    if b.bit()? == 1 {
        let (l, r, t, bo) = (b.ue()?, b.ue()?, b.ue()?, b.ue()?);
        let (sub_w, sub_h) = match (chroma_format_idc, separate) {
            (1, false) => (2, 2),
            (2, false) => (2, 1),
            _ => (1, 1),
        };
        width = width.checked_sub(sub_w * (u64::from(l) + u64::from(r)))?;
        height = height.checked_sub(sub_h * (u64::from(t) + u64::from(bo)))?;
    }
    Some(Sps { width: u32::try_from(width).ok()?, height: u32::try_from(height).ok()?, frame_rate: None })
}

/// The size an MPEG-1/2 video sequence header (`00 00 01 B3`, start code included)
/// declares, and its frame rate code's rate.
pub(crate) fn mpeg12_sequence_header(d: &[u8]) -> Option<Sps> {
    if d.len() < 8 || d[..4] != [0, 0, 1, 0xB3] {
        return None;
    }
    let width = (u32::from(d[4]) << 4) | u32::from(d[5] >> 4);
    let height = (u32::from(d[5] & 0xF) << 8) | u32::from(d[6]);
    let frame_rate = match d[7] & 0xF {
        1 => Some(24000.0 / 1001.0),
        2 => Some(24.0),
        3 => Some(25.0),
        4 => Some(30000.0 / 1001.0),
        5 => Some(30.0),
        6 => Some(50.0),
        7 => Some(60000.0 / 1001.0),
        8 => Some(60.0),
        _ => None,
    };
    (width > 0 && height > 0).then_some(Sps { width, height, frame_rate })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // 1 → 0, 010 → 1, 011 → 2, 00100 → 3
        let d = [0b1010_0110, 0b0100_0000];
        let mut b = Bits::new(&d);
        assert_eq!((b.ue(), b.ue(), b.ue(), b.ue()), (Some(0), Some(1), Some(2), Some(3)));
        assert_eq!(b.ue(), None);
        // 32 leading zeros never end a value.
        let mut b = Bits::new(&[0, 0, 0, 0, 0xFF]);
        assert_eq!(b.ue(), None);
    }

    #[test]
    fn emulation_prevention_is_removed() {
        assert_eq!(rbsp(&[0, 0, 3, 1, 0, 0, 3, 0, 0], 100), [0, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn annex_b_splits_on_three_and_four_byte_start_codes() {
        let s = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4];
        let units: Vec<&[u8]> = annex_b_units(&s).collect();
        assert_eq!(units, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4]]);
    }

    /// x264's SPS for 160×90 (MB-aligned to 160×96, cropped by 3 chroma rows), 30 fps,
    /// as `faststart.mp4`'s avcC holds it.
    #[test]
    fn h264_sps_with_cropping_and_timing() {
        let sps = hex("6742c00bda0a37e4c044000003000400000300f03c50aa80");
        let s = h264_sps(&sps).unwrap();
        assert_eq!((s.width, s.height), (160, 90));
        assert_eq!(s.frame_rate, Some(30.0));
        for cut in 0..sps.len() {
            let _ = h264_sps(&sps[..cut]);
        }
    }

    /// x265's SPS for 160×90, from `hevc.mp4`'s hvcC.
    #[test]
    fn hevc_sps_with_conformance_window() {
        let sps =
            hex("42010101600000030090000003000003001ea0142061f26595952930bc05a020000003002000000303c1a2");
        let s = hevc_sps(&sps).unwrap();
        assert_eq!((s.width, s.height), (160, 90));
        for cut in 0..sps.len() {
            let _ = hevc_sps(&sps[..cut]);
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn mpeg2_sequence_header() {
        let h = [0, 0, 1, 0xB3, 0x2D, 0x02, 0x40, 0x33];
        let s = mpeg12_sequence_header(&h).unwrap();
        assert_eq!((s.width, s.height, s.frame_rate), (720, 576, Some(25.0)));
    }
}
