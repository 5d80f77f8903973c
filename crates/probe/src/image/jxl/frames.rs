//! The frame count of an animated JPEG XL codestream (ISO/IEC 18181-1): no header
//! counts the frames, so the image headers are read to their end and then each frame
//! header and its TOC, whose section sizes lead to the next frame without decoding
//! anything. Only what can be read exactly is reported: an ICC profile or a preview
//! (entropy-coded or a frame of their own before the first one), a permuted TOC
//! (entropy-coded), a codestream that ends before its last frame, or more frames or
//! header bytes than the walk allows leave the count absent, never estimated.
//!
//! The count is what a player shows, as `jxlinfo` lists it: regular (or
//! skip-progressive) frames with a duration, and the last one. Reference-only and LF
//! frames, and zero-duration layers blended into the next frame, are not frames of the
//! animation.

use std::io::{BufRead, Seek};

use asset_core::Limits;

use super::Segments;
use crate::Result;

/// The most frames walked: past it the count is left absent.
const MAX_FRAMES: u64 = 1 << 16;
/// Bytes read for the image headers, and at first for a frame header and its TOC.
const WINDOW: usize = 4096;
/// The most bytes a frame header and its TOC may take (the TOC of a very large image
/// with many passes): past it the count is left absent.
const MAX_WINDOW: usize = 1 << 20;

/// Reads bits least significant first, as JPEG XL packs them. Running out is noted
/// (`short`), so that a caller can try again with more bytes.
struct Br<'a> {
    bytes: &'a [u8],
    at: usize,
    short: bool,
}

/// One distribution of a `U32` field: a constant, or `offset + u(bits)`.
#[derive(Clone, Copy)]
enum D {
    V(u32),
    B(usize, u32),
}
use D::{B, V};

impl<'a> Br<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Br { bytes, at: 0, short: false }
    }

    fn u(&mut self, n: usize) -> Option<u32> {
        if self.at + n > self.bytes.len() * 8 {
            self.short = true;
            return None;
        }
        let mut v = 0u64;
        for i in 0..n {
            let bit = (self.bytes[self.at / 8] >> (self.at % 8)) & 1;
            v |= u64::from(bit) << i;
            self.at += 1;
        }
        u32::try_from(v).ok()
    }

    fn bool(&mut self) -> Option<bool> {
        Some(self.u(1)? == 1)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        if self.at.checked_add(n).is_none_or(|end| end > self.bytes.len() * 8) {
            self.short = true;
            return None;
        }
        self.at += n;
        Some(())
    }

    fn u32(&mut self, d: [D; 4]) -> Option<u32> {
        match d[self.u(2)? as usize] {
            V(v) => Some(v),
            B(n, offset) => self.u(n)?.checked_add(offset),
        }
    }

    fn u64(&mut self) -> Option<u64> {
        Some(match self.u(2)? {
            0 => 0,
            1 => 1 + u64::from(self.u(4)?),
            2 => 17 + u64::from(self.u(8)?),
            _ => {
                let mut v = u64::from(self.u(12)?);
                let mut shift = 12;
                while self.bool()? {
                    if shift == 60 {
                        v |= u64::from(self.u(4)?) << shift;
                        break;
                    }
                    v |= u64::from(self.u(8)?) << shift;
                    shift += 8;
                }
                v
            }
        })
    }

    fn f16s(&mut self, n: usize) -> Option<()> {
        self.skip(16 * n)
    }

    fn enumeration(&mut self) -> Option<u32> {
        self.u32([V(0), V(1), B(4, 2), B(6, 18)])
    }

    /// Extensions: a 64-bit mask, then for each set bit a length in bits to skip.
    fn extensions(&mut self) -> Option<()> {
        let mask = self.u64()?;
        let mut total = 0u64;
        for _ in 0..mask.count_ones() {
            total = total.checked_add(self.u64()?)?;
        }
        self.skip(usize::try_from(total).ok()?)
    }

    fn string(&mut self) -> Option<()> {
        let len = self.u32([V(0), B(4, 0), B(5, 16), B(10, 48)])?;
        self.skip(8 * len as usize)
    }

    fn byte_align(&mut self) {
        self.at = self.at.div_ceil(8) * 8;
    }

    fn bytes_read(&self) -> usize {
        self.at.div_ceil(8)
    }
}

/// SizeHeader (and the preview's, whose coding differs): width and height.
fn size_header(b: &mut Br<'_>) -> Option<(u32, u32)> {
    let dim = [B(9, 1), B(13, 1), B(18, 1), B(30, 1)];
    let small = b.bool()?;
    let height = if small { (b.u(5)? + 1) * 8 } else { b.u32(dim)? };
    let width = match b.u(3)? {
        0 if small => (b.u(5)? + 1) * 8,
        0 => b.u32(dim)?,
        r => ratio_width(height, r)?,
    };
    Some((width, height))
}

fn ratio_width(height: u32, ratio: u32) -> Option<u32> {
    let (num, den) = [(1, 1), (12, 10), (4, 3), (3, 2), (16, 9), (5, 4), (2, 1)][ratio as usize - 1];
    u32::try_from(u64::from(height) * num / den).ok()
}

fn preview_header(b: &mut Br<'_>) -> Option<()> {
    let div8 = b.bool()?;
    let dim = |b: &mut Br<'_>| {
        if div8 {
            b.u32([V(16), V(32), B(5, 1), B(9, 33)])
        } else {
            b.u32([B(6, 1), B(8, 65), B(10, 321), B(12, 1345)])
        }
    };
    dim(b)?;
    if b.u(3)? == 0 {
        dim(b)?;
    }
    Some(())
}

fn bit_depth(b: &mut Br<'_>) -> Option<()> {
    if b.bool()? {
        b.u32([V(32), V(16), V(24), B(6, 1)])?;
        b.u(4)?;
    } else {
        b.u32([V(8), V(10), V(12), B(6, 1)])?;
    }
    Some(())
}

/// What the frame headers depend on, from the image headers.
#[derive(Debug, Clone, Copy, Default)]
struct Image {
    width: u32,
    height: u32,
    xyb: bool,
    extra_channels: u32,
    animation: bool,
    timecodes: bool,
    /// An ICC profile or a preview frame follows the headers: not walked.
    unwalkable: bool,
}

/// Reads the SizeHeader and ImageMetadata (and, with `full`, the CustomTransformData
/// after them); stops after `have_animation` without `full`.
fn image_headers(b: &mut Br<'_>, full: bool) -> Option<Image> {
    if b.u(16)? != 0x0AFF {
        return None;
    }
    let (width, height) = size_header(b)?;
    let mut image = Image { width, height, xyb: true, ..Image::default() };
    if b.bool()? {
        // all_default: no animation, 8-bit XYB sRGB.
        if full {
            transform_data(b, true)?;
        }
        return Some(image);
    }
    let extra_fields = b.bool()?;
    if extra_fields {
        b.u(3)?; // orientation
        if b.bool()? {
            size_header(b)?; // intrinsic size
        }
        if b.bool()? {
            preview_header(b)?;
            image.unwalkable = true;
        }
        if b.bool()? {
            image.animation = true;
            b.u32([V(100), V(1000), B(10, 1), B(30, 1)])?;
            b.u32([V(1), V(1001), B(8, 1), B(10, 1)])?;
            b.u32([V(0), B(3, 0), B(16, 0), B(32, 0)])?;
            image.timecodes = b.bool()?;
        }
    }
    if !full {
        return Some(image);
    }
    bit_depth(b)?;
    b.bool()?; // modular_16bit_buffer_sufficient
    image.extra_channels = b.u32([V(0), V(1), B(4, 2), B(12, 1)])?;
    for _ in 0..image.extra_channels {
        extra_channel_info(b)?;
    }
    image.xyb = b.bool()?;
    if color_encoding(b)? {
        image.unwalkable = true;
    }
    if extra_fields && !b.bool()? {
        // ToneMapping: intensity target, min nits, relative flag, linear below.
        b.f16s(2)?;
        b.bool()?;
        b.f16s(1)?;
    }
    b.extensions()?;
    transform_data(b, image.xyb)?;
    Some(image)
}

fn extra_channel_info(b: &mut Br<'_>) -> Option<()> {
    if b.bool()? {
        return Some(());
    }
    let kind = b.enumeration()?;
    bit_depth(b)?;
    b.u32([V(0), V(3), V(4), B(3, 1)])?; // dim_shift
    b.string()?;
    match kind {
        0 => b.skip(1)?, // alpha_associated
        2 => b.f16s(4)?, // spot colour
        5 => {
            b.u32([V(1), B(2, 0), B(4, 3), B(8, 19)])?; // CFA channel
        }
        _ => {}
    }
    Some(())
}

/// A ColourEncoding; returns `want_icc`.
fn color_encoding(b: &mut Br<'_>) -> Option<bool> {
    if b.bool()? {
        return Some(false);
    }
    let want_icc = b.bool()?;
    let space = b.enumeration()?;
    let (xyb, gray) = (space == 2, space == 1);
    let custom_xy = |b: &mut Br<'_>| -> Option<()> {
        let d = [B(19, 0), B(19, 524_288), B(20, 1_048_576), B(21, 2_097_152)];
        b.u32(d)?;
        b.u32(d)?;
        Some(())
    };
    if !want_icc && !xyb && b.enumeration()? == 2 {
        custom_xy(b)?; // white point
    }
    if !want_icc && !xyb && !gray && b.enumeration()? == 2 {
        for _ in 0..3 {
            custom_xy(b)?; // primaries
        }
    }
    if !want_icc {
        let gamma = !xyb && b.bool()?;
        if gamma {
            b.u(24)?;
        } else if !xyb {
            b.enumeration()?;
        }
        b.enumeration()?; // rendering intent
    }
    Some(want_icc)
}

fn transform_data(b: &mut Br<'_>, xyb: bool) -> Option<()> {
    if b.bool()? {
        return Some(());
    }
    if xyb && !b.bool()? {
        b.f16s(9 + 3 + 4)?; // the opsin inverse matrix, its biases, quant biases
    }
    let mask = b.u(3)?;
    for (bit, n) in [(1, 15), (2, 55), (4, 210)] {
        if mask & bit != 0 {
            b.f16s(n)?;
        }
    }
    Some(())
}

/// Whether the codestream's first bytes declare an animation.
pub(super) fn is_animation(head: &[u8]) -> bool {
    image_headers(&mut Br::new(head), false).is_some_and(|i| i.animation)
}

/// One frame header and its TOC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    /// Shown as a frame of the animation.
    displayed: bool,
    is_last: bool,
    /// Bytes of the header and TOC, then of the sections.
    header_len: usize,
    sections: u64,
}

const REGULAR: u32 = 0;
const LF: u32 = 1;
const REFERENCE_ONLY: u32 = 2;
const SKIP_PROGRESSIVE: u32 = 3;
const USE_LF_FRAME: u64 = 0x20;

/// Reads a frame header and its TOC from the start of `bytes` (byte-aligned). `None`
/// when it cannot be read exactly (a permuted TOC, or `b.short` when more bytes are
/// needed).
fn frame(b: &mut Br<'_>, image: &Image) -> Option<Frame> {
    let mut f = FrameFields { upsampling: 1, group_shift: 1, passes: 1, ..FrameFields::default() };
    let all_default = b.bool()?;
    if all_default {
        (f.kind, f.is_last, f.width, f.height) = (REGULAR, true, image.width, image.height);
    } else {
        f.kind = b.u(2)?;
        f.modular = b.u(1)? == 1;
        let flags = b.u64()?;
        let ycbcr = !image.xyb && b.bool()?;
        if flags & USE_LF_FRAME == 0 {
            if ycbcr {
                for c in 0..3 {
                    f.jpeg_upsampling[c] = b.u(2)?;
                }
            }
            f.upsampling = b.u32([V(1), V(2), V(4), V(8)])?;
            for _ in 0..image.extra_channels {
                b.u32([V(1), V(2), V(4), V(8)])?;
            }
        }
        if f.modular {
            f.group_shift = b.u(2)?;
        } else if image.xyb {
            b.u(3)?; // x_qm_scale
            b.u(3)?; // b_qm_scale
        }
        if f.kind != REFERENCE_ONLY {
            f.passes = b.u32([V(1), V(2), V(3), B(3, 4)])?;
            if f.passes != 1 {
                let ds = b.u32([V(0), V(1), V(2), B(1, 3)])?;
                b.skip(2 * (f.passes as usize - 1))?; // shift
                for _ in 0..ds {
                    b.u32([V(1), V(2), V(4), V(8)])?; // downsample
                }
                for _ in 0..ds {
                    b.u32([V(0), V(1), V(2), B(3, 0)])?; // last_pass
                }
            }
        }
        if f.kind == LF {
            f.lf_level = b.u32([V(1), V(2), V(3), V(4)])?;
        }
        let (mut width, mut height) = (image.width, image.height);
        let mut partial = false;
        if f.kind != LF && b.bool()? {
            let coord = [B(8, 0), B(11, 256), B(14, 2304), B(30, 18688)];
            let (mut x0, mut y0) = (0i64, 0i64);
            if f.kind != REFERENCE_ONLY {
                x0 = unpack_signed(b.u32(coord)?);
                y0 = unpack_signed(b.u32(coord)?);
            }
            width = b.u32(coord)?;
            height = b.u32(coord)?;
            partial = x0 > 0
                || y0 > 0
                || i64::from(width) + x0 < i64::from(image.width)
                || i64::from(height) + y0 < i64::from(image.height);
        }
        f.width = width;
        f.height = height;
        let normal = f.kind == REGULAR || f.kind == SKIP_PROGRESSIVE;
        let mut replace = true;
        let mut duration = 0;
        if normal {
            replace = blending_info(b, image, partial)?;
            for _ in 0..image.extra_channels {
                blending_info(b, image, partial)?;
            }
            if image.animation {
                duration = b.u32([V(0), V(1), B(8, 0), B(32, 0)])?;
            }
            if image.timecodes {
                b.u(32)?;
            }
            f.is_last = b.bool()?;
        }
        f.duration = duration;
        let mut save_as_reference = 0;
        if f.kind != LF && !f.is_last {
            save_as_reference = b.u(2)?;
        }
        let can_be_referenced = !f.is_last && f.kind != LF && (duration == 0 || save_as_reference != 0);
        if f.kind == REFERENCE_ONLY || (can_be_referenced && replace && !partial && normal) {
            b.bool()?; // save_before_color_transform
        }
        b.string()?; // name
        restoration_filter(b, f.modular)?;
        b.extensions()?;
    }
    let entries = f.toc_entries()?;
    // TOC: permuted flag (a permutation is entropy-coded: not read), byte alignment,
    // one U32 size per section, byte alignment.
    if b.bool()? {
        return None;
    }
    b.byte_align();
    let mut sections = 0u64;
    for _ in 0..entries {
        sections += u64::from(b.u32([B(10, 0), B(14, 1024), B(22, 17_408), B(30, 4_211_712)])?);
    }
    b.byte_align();
    let normal = f.kind == REGULAR || f.kind == SKIP_PROGRESSIVE;
    Some(Frame {
        displayed: normal && (f.duration > 0 || f.is_last),
        is_last: normal && f.is_last,
        header_len: b.bytes_read(),
        sections,
    })
}

fn unpack_signed(v: u32) -> i64 {
    if v & 1 == 0 { i64::from(v >> 1) } else { -(i64::from(v >> 1)) - 1 }
}

#[derive(Debug, Default)]
struct FrameFields {
    kind: u32,
    modular: bool,
    jpeg_upsampling: [u32; 3],
    upsampling: u32,
    group_shift: u32,
    passes: u32,
    lf_level: u32,
    width: u32,
    height: u32,
    duration: u32,
    is_last: bool,
}

impl FrameFields {
    /// The number of TOC entries: one when the frame is one group of one pass, else
    /// LfGlobal, the LF groups, HfGlobal and a group per pass. `None` on an overflow.
    fn toc_entries(&self) -> Option<u64> {
        let (mut w, mut h) = (u64::from(self.width), u64::from(self.height));
        if self.kind == LF {
            let scale = 1u64 << (3 * self.lf_level);
            (w, h) = (w.div_ceil(scale), h.div_ceil(scale));
        }
        let up = u64::from(self.upsampling);
        (w, h) = (w.div_ceil(up), h.div_ceil(up));
        let h_shift = self.jpeg_upsampling.iter().map(|&j| [0, 1, 1, 0][j as usize]).max().unwrap_or(0);
        let v_shift = self.jpeg_upsampling.iter().map(|&j| [0, 1, 0, 1][j as usize]).max().unwrap_or(0);
        let group = 128u64 << self.group_shift;
        let groups = w.div_ceil(group).checked_mul(h.div_ceil(group))?;
        let blocks_w = w.div_ceil(8 << h_shift) << h_shift;
        let blocks_h = h.div_ceil(8 << v_shift) << v_shift;
        let lf_groups = blocks_w.div_ceil(group).checked_mul(blocks_h.div_ceil(group))?;
        if groups == 1 && self.passes == 1 {
            return Some(1);
        }
        groups.checked_mul(u64::from(self.passes))?.checked_add(lf_groups)?.checked_add(2)
    }
}

/// A BlendingInfo; returns whether its mode is Replace.
fn blending_info(b: &mut Br<'_>, image: &Image, partial: bool) -> Option<bool> {
    let mode = b.u32([V(0), V(1), V(2), B(2, 3)])?;
    // Blend, alpha-weighted add, multiply.
    if image.extra_channels > 0 && (mode == 2 || mode == 3) {
        b.u32([V(0), V(1), V(2), B(3, 3)])?; // alpha channel
    }
    if image.extra_channels > 0 && (2..=4).contains(&mode) {
        b.bool()?; // clamp
    }
    if mode != 0 || partial {
        b.u32([V(0), V(1), V(2), V(3)])?; // source
    }
    Some(mode == 0)
}

fn restoration_filter(b: &mut Br<'_>, modular: bool) -> Option<()> {
    if b.bool()? {
        return Some(());
    }
    if b.bool()? && b.bool()? {
        b.f16s(6)?; // custom Gabor-like weights
    }
    let epf = b.u(2)?;
    if epf > 0 {
        if !modular && b.bool()? {
            b.f16s(8)?; // sharpness LUT
        }
        if b.bool()? {
            b.f16s(5)?; // channel scales and zero-flush thresholds
        }
        if b.bool()? {
            if !modular {
                b.f16s(1)?; // quant_mul
            }
            b.f16s(3)?; // sigma scales and border SAD multiplier
        }
        if modular {
            b.f16s(1)?; // sigma for modular
        }
    }
    b.extensions()
}

/// Counts the displayed frames of an animated codestream, walking frame headers and
/// TOCs (bounded by [`MAX_FRAMES`] and `limits.max_items`, [`MAX_WINDOW`] bytes per
/// header). `None` when the count cannot be read exactly.
pub(super) fn count<R: BufRead + Seek>(
    r: &mut R,
    segments: &Segments,
    limits: &Limits,
) -> Result<Option<u64>> {
    let total = segments.len();
    let mut window = WINDOW;
    let (image, mut at) = loop {
        let head = segments.read(r, 0, window)?;
        let mut b = Br::new(&head);
        match image_headers(&mut b, true) {
            Some(image) => {
                b.byte_align();
                break (image, b.bytes_read() as u64);
            }
            None if b.short && head.len() == window && window < MAX_WINDOW => window *= 16,
            None => return Ok(None),
        }
    };
    if image.unwalkable || !image.animation {
        return Ok(None);
    }
    let mut displayed = 0u64;
    for _ in 0..MAX_FRAMES.min(limits.max_items) {
        let mut window = WINDOW;
        let f = loop {
            let bytes = segments.read(r, at, window)?;
            let mut b = Br::new(&bytes);
            match frame(&mut b, &image) {
                Some(f) => break f,
                None if b.short && bytes.len() == window && window < MAX_WINDOW => window *= 16,
                None => return Ok(None),
            }
        };
        displayed += u64::from(f.displayed);
        let Some(next) = (at + f.header_len as u64).checked_add(f.sections).filter(|&n| n <= total) else {
            return Ok(None);
        };
        if f.is_last {
            return Ok(Some(displayed));
        }
        at = next;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::super::Segment;
    use super::*;

    /// Packs (value, bit count) fields least significant bit first; `None` pads to a byte.
    fn pack(fields: &[Option<(u32, usize)>]) -> Vec<u8> {
        let mut bits: Vec<u8> = Vec::new();
        for f in fields {
            match f {
                Some((v, n)) => bits.extend((0..*n).map(|i| ((v >> i) & 1) as u8)),
                None => bits.resize(bits.len().div_ceil(8) * 8, 0),
            }
        }
        bits.resize(bits.len().div_ceil(8) * 8, 0);
        bits.chunks(8).map(|c| c.iter().rev().fold(0, |b, &x| (b << 1) | x)).collect()
    }

    /// An 8x8 animated image's headers (all fields written out, none defaulted).
    fn headers() -> Vec<Option<(u32, usize)>> {
        let f = |v, n| Some((v, n));
        vec![
            f(0xFF, 8),
            f(0x0A, 8),
            f(1, 1), // small
            f(0, 5), // height 8
            f(1, 3), // ratio 1:1
            f(0, 1), // metadata not all_default
            f(1, 1), // extra_fields
            f(0, 3), // orientation
            f(0, 1), // no intrinsic size
            f(0, 1), // no preview
            f(1, 1), // animation
            f(0, 2), // tps numerator 100
            f(0, 2), // tps denominator 1
            f(0, 2), // loops 0
            f(0, 1), // no timecodes
            f(0, 1), // bit depth: integer
            f(0, 2), // 8 bits
            f(1, 1), // modular 16-bit sufficient
            f(0, 2), // no extra channels
            f(1, 1), // xyb
            f(1, 1), // colour encoding all_default
            f(1, 1), // tone mapping all_default
            f(0, 2), // no extensions
            f(1, 1), // transform data all_default
            None,
        ]
    }

    /// A modular 8x8 frame of one section of one byte.
    fn frame(kind: u32, duration: Option<u32>, is_last: bool, save: u32) -> Vec<Option<(u32, usize)>> {
        let f = |v, n| Some((v, n));
        let mut v = vec![f(0, 1), f(kind, 2), f(1, 1), f(0, 2), f(0, 2), f(1, 2)];
        if kind != REFERENCE_ONLY {
            v.push(f(0, 2)); // one pass
        }
        v.push(f(0, 1)); // no crop
        if let Some(d) = duration {
            v.extend([f(0, 2), f(2, 2), f(d, 8), f(u32::from(is_last), 1)]); // replace, duration
        }
        if !is_last {
            v.push(f(save, 2));
        }
        let normal = duration.is_some();
        let can_be_referenced = !is_last && (duration == Some(0) || save != 0);
        if kind == REFERENCE_ONLY || (normal && can_be_referenced) {
            v.push(f(0, 1)); // save_before_ct
        }
        v.extend([f(0, 2), f(1, 1), f(0, 2)]); // name, restoration filter, extensions
        v.extend([f(0, 1), None, f(0, 2), f(1, 10), None, f(0xA5, 8)]); // TOC and section
        v
    }

    fn count_of(fields: &[Option<(u32, usize)>]) -> Option<u64> {
        let bytes = pack(fields);
        let segments = Segments(vec![Segment { at: 0, file_at: 0, len: bytes.len() as u64 }]);
        count(&mut Cursor::new(bytes), &segments, &Limits::default()).unwrap()
    }

    #[test]
    fn only_displayed_frames_count() {
        let h = headers();
        assert!(is_animation(&pack(&h)));
        let shown = frame(REGULAR, Some(5), false, 0);
        let last = frame(REGULAR, Some(5), true, 0);
        assert_eq!(count_of(&[h.clone(), shown.clone(), shown.clone(), last.clone()].concat()), Some(3));
        // A zero-duration layer (blended into the next frame) and a reference-only frame
        // are not frames of the animation.
        let layer = frame(REGULAR, Some(0), false, 1);
        let reference = frame(REFERENCE_ONLY, None, false, 1);
        assert_eq!(count_of(&[h.clone(), shown.clone(), layer, reference, last.clone()].concat()), Some(2));
        // No last frame before the codestream ends: absent, not the frames seen.
        assert_eq!(count_of(&[h.clone(), shown.clone(), shown].concat()), None);
        // A permuted TOC cannot be skipped without entropy decoding: absent.
        let mut permuted = last;
        let toc = permuted.iter().rposition(|f| *f == Some((0, 1))).unwrap();
        permuted[toc] = Some((1, 1));
        assert_eq!(count_of(&[h, permuted].concat()), None);
    }

    #[test]
    fn an_icc_profile_before_the_frames_leaves_the_count_absent() {
        // Colour encoding written out with want_icc: an entropy-coded profile follows.
        let mut h = headers();
        let at = h.len() - 5;
        assert_eq!(h[at], Some((1, 1)));
        h.splice(at..=at, [Some((0, 1)), Some((1, 1)), Some((0, 2))]);
        let last = frame(REGULAR, Some(5), true, 0);
        assert_eq!(count_of(&[headers(), last.clone()].concat()), Some(1));
        assert_eq!(count_of(&[h, last].concat()), None);
    }

    #[test]
    fn field_codings() {
        // U64: selector 3, 12 bits, then 8-bit groups while the continue bit is set.
        let b = pack(&[Some((3, 2)), Some((0xABC, 12)), Some((1, 1)), Some((0x12, 8)), Some((0, 1))]);
        assert_eq!(Br::new(&b).u64(), Some(0x12ABC));
        assert_eq!((unpack_signed(0), unpack_signed(1), unpack_signed(4)), (0, -1, 2));
        // A TOC of many groups: 600x400 VarDCT, one pass: LfGlobal, one LF group (2048
        // pixels square), HfGlobal and 3x2 groups of 256.
        let f = FrameFields {
            upsampling: 1,
            group_shift: 1,
            passes: 1,
            width: 600,
            height: 400,
            ..Default::default()
        };
        assert_eq!(f.toc_entries(), Some(2 + 1 + 6));
        let one = FrameFields {
            upsampling: 1,
            group_shift: 1,
            passes: 1,
            width: 256,
            height: 256,
            ..Default::default()
        };
        assert_eq!(one.toc_entries(), Some(1));
        // An absurd size is only a count (the TOC read then runs out of bytes).
        let huge = FrameFields {
            upsampling: 1,
            group_shift: 0,
            passes: 11,
            width: u32::MAX,
            height: u32::MAX,
            ..Default::default()
        };
        let _ = huge.toc_entries();
    }
}
