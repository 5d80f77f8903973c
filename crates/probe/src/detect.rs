//! Content detection: one table of format descriptors ([`DESCRIPTORS`]), each with its
//! signatures (magic bytes at offsets, or a structural check), their priority, MIME type,
//! data type and extractor, as Symphonia's registry does. Priority questions (DICM at
//! 128 before TIFF at 0) are settled in that one table, not by the order of `if`s. The
//! file name is never consulted, so a file whose extension lies is still probed as what
//! it is; a descriptor's extensions are hints for people and tools, never for detection.

use std::sync::OnceLock;

use asset_core::{AssetMetadata, DataType, Limits};

use crate::{Result, Source};

/// How many leading bytes detection needs; the probe reads this much up front.
pub const SNIFF_LEN: usize = 8192;

/// Every container the probe recognises. Each has one entry in [`DESCRIPTORS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    Jpeg,
    Png,
    Gif,
    WebP,
    Bmp,
    Tiff,
    Avif,
    Heic,
    Svg,
    /// JPEG 2000: the `.jp2` box structure or a raw codestream.
    Jpeg2000,
    /// JPEG XL: a bare codestream or the ISOBMFF-style container.
    JpegXl,
    /// ICO and CUR.
    Ico,
    /// PBM, PGM, PPM (plain and raw) and PAM.
    Pnm,
    Tga,
    Qoi,
    RadianceHdr,
    OpenExr,
    /// PSD and PSB.
    Psd,
    /// Canon CR3 raw: ISO BMFF with the `crx ` brand (`image::cr3`).
    CanonCr3,
    /// ISO base media (MP4, MOV, M4A, 3GP); audio-only files are told apart by the
    /// video module from their tracks, the `ftyp` brand is only a hint.
    IsoBmff,
    QuickTime,
    Matroska,
    Avi,
    /// MPEG transport stream: 188-byte packets (`.ts`) or 192 (`.m2ts`/`.mts`).
    MpegTs,
    /// ASF: Windows Media video and audio (`.wmv`, `.wma`, `.asf`).
    Asf,
    /// Flash Video.
    Flv,
    /// MPEG program stream (`.mpg`, `.mpeg`, `.vob`).
    MpegPs,
    Wav,
    Aiff,
    Flac,
    Ogg,
    Mp3,
    Adts,
    /// Raw AC-3 / E-AC-3 (`.ac3`, `.eac3`).
    Ac3,
    /// Apple Core Audio Format.
    Caf,
    /// AMR-NB / AMR-WB storage format (`.amr`, `.awb`).
    Amr,
    Dicom,
    Pdf,
    Text,
    /// NIfTI-1 or NIfTI-2, one file (`.nii`) or the header of a pair (`.hdr`).
    Nifti,
    /// A gzipped NIfTI (`.nii.gz`), told from other gzip files by its inflated header.
    NiftiGz,
    /// NRRD with its data attached (`.nrrd`) or a detached header (`.nhdr`).
    Nrrd,
}

/// Reads one detected format: metadata from the file under the limits.
pub type Extractor = fn(&Source, Format, &Limits) -> Result<AssetMetadata>;

/// One way to recognise a format from the head of a file.
#[derive(Debug, Clone, Copy)]
pub struct Signature {
    /// Byte strings that must all be found, each at its offset (within [`SNIFF_LEN`]).
    pub magic: &'static [(usize, &'static [u8])],
    /// A further test on the head, for structure a fixed string cannot express (or the
    /// whole test when `magic` is empty).
    pub check: Option<fn(&[u8]) -> bool>,
    /// The highest-priority matching signature wins; see the `P_*` levels.
    pub priority: u8,
}

/// Everything the probe knows about a format before its extractor looks inside.
#[derive(Debug, Clone, Copy)]
pub struct Descriptor {
    pub format: Format,
    /// Any one signature is enough.
    pub signatures: &'static [Signature],
    /// The MIME type reported; extractors may refine it (WebM, M4A).
    pub mime: &'static str,
    /// The data type before the extractor looks inside (an MP4 with only an audio track
    /// is reported as audio by the video module).
    pub data_type: DataType,
    /// Usual file extensions, lowercase. Hints only: detection never reads the name.
    pub extensions: &'static [&'static str],
    /// Whether the extractor reads the whole file whatever it holds (see
    /// [`crate::needs_whole_file`]): a ranged fetch then gets the rest at the first miss.
    pub whole_file: bool,
    pub extract: Extractor,
}

// Priority levels, highest first. Equal priorities are tried in table order.
/// `DICM` at 128: the 128-byte preamble in front of it is free-form and may hold another
/// format's magic (DICOM/TIFF dual-personality files), so it outranks every magic at 0.
const P_AFTER_PREAMBLE: u8 = 200;
/// A brand narrowing a container magic (AVIF, HEIC within ISO BMFF's `ftyp`).
const P_BRAND: u8 = 120;
/// A fixed magic at a fixed offset.
const P_MAGIC: u8 = 100;
/// Structural heuristics (no fixed magic, or a magic anywhere in a window), weakest last.
const P_DICOM_BARE: u8 = 60;
const P_QUICKTIME_LEGACY: u8 = 58;
/// A sync byte at every packet of the head (up to 43 of them) is stronger than a
/// `%PDF-` anywhere in the first KiB, which a transport stream's payload may hold.
const P_TS_PACKETS: u8 = 57;
const P_PDF: u8 = 56;
/// ID3 is a magic at 0 but ranks below PDF, as it always has: a "%PDF-" in the first KiB
/// of a tag wins.
const P_ID3: u8 = 54;
const P_ADTS: u8 = 52;
const P_MPEG_FRAMES: u8 = 50;
const P_SVG: u8 = 48;
/// TGA has no magic: a header of legal values, below every other binary signature (the
/// extractor still wants the TGA 2.0 footer or a `.tga` name).
const P_TGA: u8 = 40;
/// Text is what is left when nothing binary matched.
const P_TEXT: u8 = 0;

const fn magic(priority: u8, magic: &'static [(usize, &'static [u8])]) -> Signature {
    Signature { magic, check: None, priority }
}

const fn checked(
    priority: u8,
    magic: &'static [(usize, &'static [u8])],
    check: fn(&[u8]) -> bool,
) -> Signature {
    Signature { magic, check: Some(check), priority }
}

/// The format table. To add a format: add a `Format` variant, write its module with an
/// [`Extractor`], and add one entry here in its family's section: its signatures (magic
/// bytes at offsets, plus a `check` fn for structure a magic cannot say), a priority
/// level (`P_MAGIC` unless it must beat or yield to another entry; say why), MIME, data
/// type, extensions (hints only), whether it reads the whole file, and the extractor.
/// `every_signature_fits_the_sniff_window` and the golden fixtures check the rest.
pub static DESCRIPTORS: &[Descriptor] = &[
    // --- images -------------------------------------------------------------------
    Descriptor {
        format: Format::Jpeg,
        signatures: &[magic(P_MAGIC, &[(0, b"\xFF\xD8\xFF")])],
        mime: "image/jpeg",
        data_type: DataType::Image,
        extensions: &["jpg", "jpeg", "jpe", "jfif"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::Png,
        signatures: &[magic(P_MAGIC, &[(0, b"\x89PNG\r\n\x1a\n")])],
        mime: "image/png",
        data_type: DataType::Image,
        extensions: &["png"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::Gif,
        signatures: &[magic(P_MAGIC, &[(0, b"GIF87a")]), magic(P_MAGIC, &[(0, b"GIF89a")])],
        mime: "image/gif",
        data_type: DataType::Image,
        extensions: &["gif"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::WebP,
        signatures: &[magic(P_MAGIC, &[(0, b"RIFF"), (8, b"WEBP")])],
        mime: "image/webp",
        data_type: DataType::Image,
        extensions: &["webp"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::Bmp,
        signatures: &[checked(P_MAGIC, &[(0, b"BM")], bmp_header_plausible)],
        mime: "image/bmp",
        data_type: DataType::Image,
        extensions: &["bmp", "dib"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::Tiff,
        signatures: &[
            magic(P_MAGIC, &[(0, b"II*\0")]),
            magic(P_MAGIC, &[(0, b"MM\0*")]),
            magic(P_MAGIC, &[(0, b"II+\0")]),
            magic(P_MAGIC, &[(0, b"MM\0+")]),
        ],
        mime: "image/tiff",
        data_type: DataType::Image,
        extensions: &["tif", "tiff"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::Avif,
        signatures: &[checked(P_BRAND, &[(4, b"ftyp")], ftyp_avif)],
        mime: "image/avif",
        data_type: DataType::Image,
        extensions: &["avif"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::Heic,
        // Below AVIF: an AVIF may name mif1 as its major brand.
        signatures: &[checked(P_BRAND - 1, &[(4, b"ftyp")], ftyp_heic)],
        mime: "image/heic",
        data_type: DataType::Image,
        extensions: &["heic", "heif", "hif"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::Svg,
        signatures: &[checked(P_SVG, &[], is_svg)],
        mime: "image/svg+xml",
        data_type: DataType::Image,
        extensions: &["svg"],
        whole_file: false,
        extract: crate::image::probe,
    },
    // Issue 11 images: each walker reads its header only (crate::image::<module>).
    Descriptor {
        format: Format::Jpeg2000,
        signatures: &[
            magic(P_MAGIC, &[(0, crate::image::jp2::JP2_SIGNATURE)]),
            magic(P_MAGIC, &[(0, crate::image::jp2::J2K_SIGNATURE)]),
        ],
        mime: "image/jp2",
        data_type: DataType::Image,
        extensions: &["jp2", "jpx", "jpf", "j2k", "j2c", "jpc"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::JpegXl,
        signatures: &[
            magic(P_MAGIC, &[(0, crate::image::jxl::CODESTREAM_SIGNATURE)]),
            magic(P_MAGIC, &[(0, crate::image::jxl::CONTAINER_SIGNATURE)]),
        ],
        mime: "image/jxl",
        data_type: DataType::Image,
        extensions: &["jxl"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::Ico,
        signatures: &[
            checked(P_MAGIC, &[(0, crate::image::ico::ICO_SIGNATURE)], crate::image::ico::sniff),
            checked(P_MAGIC, &[(0, crate::image::ico::CUR_SIGNATURE)], crate::image::ico::sniff),
        ],
        mime: "image/x-icon",
        data_type: DataType::Image,
        extensions: &["ico", "cur"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::Pnm,
        // P1-P3 are ASCII: the header check outranks text.
        signatures: &[checked(P_MAGIC, &[(0, b"P")], crate::image::pnm::sniff)],
        mime: "image/x-portable-anymap",
        data_type: DataType::Image,
        extensions: &["pnm", "pbm", "pgm", "ppm", "pam"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::Qoi,
        signatures: &[magic(P_MAGIC, &[(0, crate::image::qoi::SIGNATURE)])],
        mime: "image/qoi",
        data_type: DataType::Image,
        extensions: &["qoi"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::RadianceHdr,
        signatures: &[checked(P_MAGIC, &[(0, b"#?")], crate::image::hdr::sniff)],
        mime: "image/vnd.radiance",
        data_type: DataType::Image,
        extensions: &["hdr", "pic", "rgbe"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::OpenExr,
        signatures: &[magic(P_MAGIC, &[(0, crate::image::exr::SIGNATURE)])],
        mime: "image/x-exr",
        data_type: DataType::Image,
        extensions: &["exr"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::Psd,
        signatures: &[checked(P_MAGIC, &[(0, crate::image::psd::SIGNATURE)], crate::image::psd::sniff)],
        mime: "image/vnd.adobe.photoshop",
        data_type: DataType::Image,
        extensions: &["psd", "psb"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::Tga,
        // No magic: a legal header at the weakest binary level, and the extractor
        // still wants the TGA 2.0 footer or a .tga name (image::tga::confirm).
        signatures: &[checked(P_TGA, &[], crate::image::tga::sniff)],
        mime: "image/x-tga",
        data_type: DataType::Image,
        extensions: &["tga", "icb", "vda", "vst"],
        whole_file: false,
        extract: crate::image::probe,
    },
    Descriptor {
        format: Format::CanonCr3,
        // ISO BMFF, but its major brand `crx ` names a still image: above the generic
        // ISO BMFF entry (P_MAGIC) and QuickTime's brand, and above AVIF and HEIC, which
        // also read compatible brands (a major brand says more). Canon's movie raw
        // (CRM) shares the brand and stays with the video path (`cr3::is_still`).
        signatures: &[checked(P_BRAND + 1, &[(4, b"ftyp"), (8, b"crx ")], ftyp_cr3)],
        mime: "image/x-canon-cr3",
        data_type: DataType::Image,
        extensions: &["cr3"],
        whole_file: false,
        extract: crate::image::probe,
    },
    // --- video --------------------------------------------------------------------
    Descriptor {
        format: Format::IsoBmff,
        signatures: &[checked(P_MAGIC, &[(4, b"ftyp")], ftyp_any)],
        mime: "video/mp4",
        data_type: DataType::Video,
        extensions: &["mp4", "m4v", "m4a", "3gp", "3g2"],
        whole_file: false,
        extract: crate::video::probe,
    },
    Descriptor {
        format: Format::QuickTime,
        signatures: &[
            // Below AVIF and HEIC, which look at compatible brands too.
            checked(P_BRAND - 2, &[(4, b"ftyp"), (8, b"qt  ")], ftyp_any),
            // Old MOVs have no `ftyp` and start straight with another box.
            checked(P_QUICKTIME_LEGACY, &[], quicktime_without_ftyp),
        ],
        mime: "video/quicktime",
        data_type: DataType::Video,
        extensions: &["mov", "qt"],
        whole_file: false,
        extract: crate::video::probe,
    },
    Descriptor {
        format: Format::Matroska,
        signatures: &[magic(P_MAGIC, &[(0, b"\x1A\x45\xDF\xA3")])],
        mime: "video/x-matroska",
        data_type: DataType::Video,
        extensions: &["mkv", "webm", "mka"],
        whole_file: false,
        extract: crate::video::probe,
    },
    Descriptor {
        format: Format::Avi,
        signatures: &[
            magic(P_MAGIC, &[(0, b"RIFF"), (8, b"AVI ")]),
            magic(P_MAGIC, &[(0, b"RIFF"), (8, b"AVIX")]),
        ],
        mime: "video/x-msvideo",
        data_type: DataType::Video,
        extensions: &["avi"],
        whole_file: false,
        extract: crate::video::probe,
    },
    Descriptor {
        format: Format::MpegTs,
        // No magic of its own: 0x47 at every packet start, for any of the packet sizes.
        signatures: &[checked(P_TS_PACKETS, &[], ts_packets)],
        mime: "video/mp2t",
        data_type: DataType::Video,
        extensions: &["ts", "m2ts", "mts", "m2t"],
        // Head and tail only: the last timestamps come from a suffix range.
        whole_file: false,
        extract: crate::video::probe,
    },
    Descriptor {
        format: Format::Asf,
        signatures: &[magic(P_MAGIC, &[(0, &crate::video::ASF_HEADER_GUID)])],
        mime: "video/x-ms-wmv",
        data_type: DataType::Video,
        extensions: &["wmv", "wma", "asf"],
        whole_file: false,
        extract: crate::video::probe,
    },
    Descriptor {
        format: Format::Flv,
        signatures: &[magic(P_MAGIC, &[(0, b"FLV\x01")])],
        mime: "video/x-flv",
        data_type: DataType::Video,
        extensions: &["flv"],
        // First tags, then the last tag through the final PreviousTagSize (a suffix).
        whole_file: false,
        extract: crate::video::probe,
    },
    Descriptor {
        format: Format::MpegPs,
        // A pack start code: MPEG-1 and MPEG-2 program streams both open with one.
        signatures: &[magic(P_MAGIC, &[(0, b"\0\0\x01\xBA")])],
        mime: "video/mpeg",
        data_type: DataType::Video,
        extensions: &["mpg", "mpeg", "vob", "m2p", "ps"],
        // First packets, then a suffix window for the last timestamps.
        whole_file: false,
        extract: crate::video::probe,
    },
    // --- audio --------------------------------------------------------------------
    Descriptor {
        format: Format::Wav,
        signatures: &[
            magic(P_MAGIC, &[(0, b"RIFF"), (8, b"WAVE")]),
            magic(P_MAGIC, &[(0, b"RF64"), (8, b"WAVE")]),
        ],
        mime: "audio/wav",
        data_type: DataType::Audio,
        extensions: &["wav"],
        whole_file: false,
        extract: crate::audio::probe,
    },
    Descriptor {
        format: Format::Aiff,
        signatures: &[
            magic(P_MAGIC, &[(0, b"FORM"), (8, b"AIFF")]),
            magic(P_MAGIC, &[(0, b"FORM"), (8, b"AIFC")]),
        ],
        mime: "audio/aiff",
        data_type: DataType::Audio,
        extensions: &["aif", "aiff", "aifc"],
        whole_file: false,
        extract: crate::audio::probe,
    },
    Descriptor {
        format: Format::Flac,
        signatures: &[magic(P_MAGIC, &[(0, b"fLaC")])],
        mime: "audio/flac",
        data_type: DataType::Audio,
        extensions: &["flac"],
        whole_file: false,
        extract: crate::audio::probe,
    },
    Descriptor {
        format: Format::Ogg,
        signatures: &[magic(P_MAGIC, &[(0, b"OggS")])],
        mime: "audio/ogg",
        data_type: DataType::Audio,
        extensions: &["ogg", "oga", "opus"],
        whole_file: false,
        extract: crate::audio::probe,
    },
    Descriptor {
        format: Format::Mp3,
        signatures: &[
            magic(P_ID3, &[(0, b"ID3")]),
            // One sync word alone is too weak (it occurs in text and images): two frames.
            checked(P_MPEG_FRAMES, &[], mpeg_audio_frame),
        ],
        mime: "audio/mpeg",
        data_type: DataType::Audio,
        extensions: &["mp3", "mp2", "mpga"],
        whole_file: false,
        extract: crate::audio::probe,
    },
    Descriptor {
        format: Format::Adts,
        signatures: &[checked(P_ADTS, &[], adts_sync)],
        mime: "audio/aac",
        data_type: DataType::Audio,
        extensions: &["aac", "adts"],
        // Its duration is a walk over every frame.
        whole_file: true,
        extract: crate::audio::probe,
    },
    Descriptor {
        format: Format::Ac3,
        // The 0x0B77 sync word and a frame header that parses, twice in a row.
        signatures: &[checked(P_ADTS, &[(0, b"\x0B\x77")], crate::audio::ac3::starts_with_frames)],
        mime: "audio/ac3",
        data_type: DataType::Audio,
        extensions: &["ac3", "eac3", "ec3"],
        // The first frame header and the file size.
        whole_file: false,
        extract: crate::audio::probe,
    },
    Descriptor {
        format: Format::Caf,
        // "caff", file version 1, flags 0.
        signatures: &[magic(P_MAGIC, &[(0, b"caff\0\x01\0\0")])],
        mime: "audio/x-caf",
        data_type: DataType::Audio,
        extensions: &["caf"],
        whole_file: false,
        extract: crate::audio::probe,
    },
    Descriptor {
        format: Format::Amr,
        signatures: &[magic(P_MAGIC, &[(0, b"#!AMR\n")]), magic(P_MAGIC, &[(0, b"#!AMR-WB\n")])],
        mime: "audio/amr",
        data_type: DataType::Audio,
        extensions: &["amr", "awb"],
        whole_file: false,
        extract: crate::audio::probe,
    },
    // --- medical ------------------------------------------------------------------
    Descriptor {
        format: Format::Dicom,
        signatures: &[
            magic(P_AFTER_PREAMBLE, &[(128, b"DICM")]),
            // A preamble-less Part 10 file may keep the magic: "DICM" then group 0002.
            magic(P_MAGIC, &[(0, b"DICM\x02\0")]),
            checked(P_DICOM_BARE, &[], dicom_without_preamble),
        ],
        mime: "application/dicom",
        data_type: DataType::Dicom,
        extensions: &["dcm", "dicom", "dic"],
        whole_file: false,
        extract: crate::dicom::probe,
    },
    Descriptor {
        format: Format::Nifti,
        signatures: &[
            checked(P_MAGIC, &[(344, b"n+1\0")], crate::volume::nifti1),
            checked(P_MAGIC, &[(344, b"ni1\0")], crate::volume::nifti1),
            checked(P_MAGIC, &[(4, b"n+2\0\r\n\x1a\n")], crate::volume::nifti2),
            checked(P_MAGIC, &[(4, b"ni2\0\r\n\x1a\n")], crate::volume::nifti2),
        ],
        mime: "application/x-nifti",
        data_type: DataType::MedicalVolume,
        extensions: &["nii", "hdr"],
        whole_file: false,
        extract: crate::volume::probe,
    },
    Descriptor {
        format: Format::NiftiGz,
        // Inflates at most a header's 540 bytes of the sniffed head.
        signatures: &[checked(P_MAGIC, &[(0, b"\x1F\x8B\x08")], crate::volume::gzipped_nifti)],
        mime: "application/x-nifti+gzip",
        data_type: DataType::MedicalVolume,
        extensions: &["nii.gz"],
        whole_file: false,
        extract: crate::volume::probe,
    },
    Descriptor {
        format: Format::Nrrd,
        signatures: &[checked(P_MAGIC, &[(0, b"NRRD000")], crate::volume::nrrd_magic)],
        mime: "application/x-nrrd",
        data_type: DataType::MedicalVolume,
        extensions: &["nrrd", "nhdr"],
        whole_file: false,
        extract: crate::volume::probe,
    },
    // --- documents ----------------------------------------------------------------
    Descriptor {
        format: Format::Pdf,
        // The header may follow up to 1 KiB of junk, as readers accept.
        signatures: &[checked(P_PDF, &[], pdf_header)],
        mime: "application/pdf",
        data_type: DataType::Pdf,
        extensions: &["pdf"],
        // lopdf parses from memory.
        whole_file: true,
        extract: crate::pdf::probe,
    },
    Descriptor {
        format: Format::Text,
        signatures: &[checked(P_TEXT, &[], looks_like_text)],
        mime: "text/plain",
        data_type: DataType::Text,
        extensions: &["txt", "csv", "md", "json", "xml", "html"],
        // Every character is counted.
        whole_file: true,
        extract: crate::text::probe,
    },
];

impl Format {
    /// The format's entry in [`DESCRIPTORS`].
    pub fn descriptor(self) -> &'static Descriptor {
        DESCRIPTORS
            .iter()
            .find(|d| d.format == self)
            .expect("every format has a descriptor (test every_format_has_one_descriptor)")
    }

    /// The data type a format belongs to before its extractor looks inside.
    pub fn data_type(self) -> DataType {
        self.descriptor().data_type
    }

    /// The MIME type reported for the format; extractors may refine it (WebM, M4A).
    pub fn mime(self) -> &'static str {
        self.descriptor().mime
    }
}

impl Signature {
    fn matches(&self, h: &[u8]) -> bool {
        self.magic.iter().all(|&(off, sig)| h.get(off..off + sig.len()) == Some(sig))
            && self.check.is_none_or(|check| check(h))
    }
}

/// Every signature of the table, highest priority first (table order among equals).
fn by_priority() -> &'static [(&'static Signature, Format)] {
    static ORDER: OnceLock<Vec<(&'static Signature, Format)>> = OnceLock::new();
    ORDER.get_or_init(|| {
        let mut all: Vec<_> =
            DESCRIPTORS.iter().flat_map(|d| d.signatures.iter().map(move |s| (s, d.format))).collect();
        // A stable sort keeps table order among equal priorities.
        all.sort_by_key(|(s, _)| std::cmp::Reverse(s.priority));
        all
    })
}

/// Identifies the container from the leading bytes of a file (up to [`SNIFF_LEN`]).
/// `None` means no signature matched and the bytes do not look like text either.
pub fn detect(head: &[u8]) -> Option<Format> {
    by_priority().iter().find(|(sig, _)| sig.matches(head)).map(|&(_, format)| format)
}

fn bmp_header_plausible(h: &[u8]) -> bool {
    if h.len() < 26 {
        return false;
    }
    // DIB header size is one of the known BITMAPINFOHEADER variants.
    let dib = u32::from_le_bytes([h[14], h[15], h[16], h[17]]);
    matches!(dib, 12 | 40 | 52 | 56 | 64 | 108 | 124)
}

/// ISO BMFF with an `ftyp` box first: long enough to hold the major brand.
fn ftyp_any(h: &[u8]) -> bool {
    h.len() >= 12
}

/// The major brand and the compatible brands of a leading `ftyp` box.
fn ftyp_brands(h: &[u8]) -> (&[u8], impl Iterator<Item = &[u8]>) {
    let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let end = size.clamp(8, h.len());
    let compat = if end > 16 { &h[16..end] } else { &[][..] };
    (&h[8..12], compat.chunks_exact(4))
}

/// AVIF: `avif` or `avis` as the major or a compatible brand.
fn ftyp_avif(h: &[u8]) -> bool {
    if !ftyp_any(h) {
        return false;
    }
    let (major, mut compat) = ftyp_brands(h);
    let avif = |b: &[u8]| b == b"avif" || b == b"avis";
    avif(major) || compat.any(avif)
}

/// Canon CR3: the `crx ` major brand, and not a CRM movie.
fn ftyp_cr3(h: &[u8]) -> bool {
    ftyp_any(h) && crate::image::cr3::is_still(h)
}

/// HEIF: a HEIF major brand (compatible brands do not count: MP4s list `mif1` too).
fn ftyp_heic(h: &[u8]) -> bool {
    ftyp_any(h)
        && ["heic", "heix", "heim", "heis", "hevc", "hevx", "mif1", "msf1"]
            .iter()
            .any(|b| &h[8..12] == b.as_bytes())
}

/// A QuickTime file that starts straight with `moov`/`mdat`/`wide`/`free`/`skip`/`pnot`
/// (old MOVs have no `ftyp`), with a box size a real box can have.
fn quicktime_without_ftyp(h: &[u8]) -> bool {
    if h.len() < 12 || ![&b"moov"[..], b"mdat", b"wide", b"free", b"skip", b"pnot"].contains(&&h[4..8]) {
        return false;
    }
    let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    // A real box has a size of 0 (to end), 1 (64-bit size follows) or at least 8.
    size == 0 || size == 1 || size >= 8
}

/// Transport stream packets: a sync byte at every packet start the head holds.
fn ts_packets(h: &[u8]) -> bool {
    crate::video::is_transport_stream(h)
}

/// `%PDF-` within the first KiB.
fn pdf_header(h: &[u8]) -> bool {
    h[..h.len().min(1024)].windows(5).any(|w| w == b"%PDF-")
}

/// An ADTS sync word: 12 set bits, then layer 0 (AAC).
fn adts_sync(h: &[u8]) -> bool {
    h.len() >= 4 && h[0] == 0xFF && h[1] & 0xF6 == 0xF0
}

/// Part 10 files without the 128-byte preamble start with a group 0002 element in
/// explicit VR little endian; bare data sets (no file meta group either) with group
/// 0008, recognised conservatively from their first two elements (see
/// [`crate::dicom::bare_encoding`]).
fn dicom_without_preamble(h: &[u8]) -> bool {
    if h.len() < 8 {
        return false;
    }
    let group = u16::from_le_bytes([h[0], h[1]]);
    let element = u16::from_le_bytes([h[2], h[3]]);
    let explicit_vr = h[4].is_ascii_uppercase() && h[5].is_ascii_uppercase();
    match group {
        0x0002 => explicit_vr && element <= 0x0100,
        0x0008 => crate::dicom::bare_encoding(h).is_some(),
        _ => false,
    }
}

/// An MPEG audio frame header at offset 0 and a second one where the first frame ends:
/// one sync word alone is too weak a signature (it occurs in text and images).
fn mpeg_audio_frame(h: &[u8]) -> bool {
    fn frame_len(b: &[u8]) -> Option<usize> {
        if b.len() < 4 || b[0] != 0xFF || b[1] & 0xE0 != 0xE0 {
            return None;
        }
        let version = (b[1] >> 3) & 3; // 0: 2.5, 2: 2, 3: 1
        let layer = (b[1] >> 1) & 3; // 1: III, 2: II, 3: I
        let bitrate_idx = (b[2] >> 4) as usize;
        let rate_idx = ((b[2] >> 2) & 3) as usize;
        let padding = ((b[2] >> 1) & 1) as usize;
        if version == 1 || layer == 0 || bitrate_idx == 0 || bitrate_idx == 15 || rate_idx == 3 {
            return None;
        }
        const V1_L3: [usize; 15] = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320];
        const V1_L2: [usize; 15] = [0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384];
        const V1_L1: [usize; 15] = [0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448];
        const V2_L1: [usize; 15] = [0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256];
        const V2_L23: [usize; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
        let kbps = match (version == 3, layer) {
            (true, 1) => V1_L3[bitrate_idx],
            (true, 2) => V1_L2[bitrate_idx],
            (true, _) => V1_L1[bitrate_idx],
            (false, 3) => V2_L1[bitrate_idx],
            (false, _) => V2_L23[bitrate_idx],
        };
        let base_rate = [44_100, 48_000, 32_000][rate_idx];
        let rate = match version {
            3 => base_rate,
            2 => base_rate / 2,
            _ => base_rate / 4,
        };
        let len = match layer {
            3 => (12 * kbps * 1000 / rate + padding) * 4,
            1 if version != 3 => 72 * kbps * 1000 / rate + padding,
            _ => 144 * kbps * 1000 / rate + padding,
        };
        (len >= 4).then_some(len)
    }
    match frame_len(h) {
        Some(len) if h.len() >= len + 4 => frame_len(&h[len..]).is_some(),
        // The file is a single frame, or the sniff window ends first: accept one frame.
        Some(len) => h.len() < len + 4,
        None => false,
    }
}

fn is_svg(h: &[u8]) -> bool {
    let text = match std::str::from_utf8(strip_utf8_bom(h)) {
        Ok(t) => t,
        // The window may cut a multi-byte character in two.
        Err(e) => std::str::from_utf8(&strip_utf8_bom(h)[..e.valid_up_to()]).unwrap_or(""),
    };
    let trimmed = text.trim_start();
    if !trimmed.starts_with('<') {
        return false;
    }
    // Skip the prolog (XML declaration, comments, doctype) and look for the root element.
    let mut rest = trimmed;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("<?") {
            match r.find("?>") {
                Some(i) => rest = &r[i + 2..],
                None => return false,
            }
        } else if let Some(r) = rest.strip_prefix("<!--") {
            match r.find("-->") {
                Some(i) => rest = &r[i + 3..],
                None => return false,
            }
        } else if let Some(r) = rest.strip_prefix("<!DOCTYPE") {
            // The document type names the root element: `svg` says SVG whatever the
            // internal subset holds, even past the sniff window.
            let name: String =
                r.trim_start().chars().take_while(|c| !c.is_whitespace() && !"[>".contains(*c)).collect();
            if name == "svg" || name == "svg:svg" {
                return true;
            }
            match skip_doctype(r) {
                Some(after) => rest = after,
                None => return false,
            }
        } else if let Some(r) = rest.strip_prefix("<!") {
            match r.find('>') {
                Some(i) => rest = &r[i + 1..],
                None => return false,
            }
        } else {
            return rest.starts_with("<svg") || rest.starts_with("<svg:svg");
        }
    }
}

/// What follows a DOCTYPE declaration (`r` starts after `<!DOCTYPE`): its internal
/// subset, if any, ends at the first `]` outside a quoted string (markup declarations
/// quote every `]` or `>` they hold); its entities are never read, let alone expanded.
fn skip_doctype(r: &str) -> Option<&str> {
    let mut quote: Option<char> = None;
    let mut in_subset = false;
    for (i, c) in r.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[') => in_subset = true,
            (None, ']') => in_subset = false,
            (None, '>') if !in_subset => return Some(&r[i + 1..]),
            _ => {}
        }
    }
    None
}

fn strip_utf8_bom(h: &[u8]) -> &[u8] {
    h.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(h)
}

/// Text has a UTF BOM, or no NUL bytes and few control characters. A UTF-16 file
/// without a BOM is not recognised: its NULs make it indistinguishable from binary.
fn looks_like_text(h: &[u8]) -> bool {
    if h.is_empty()
        || h.starts_with(b"\xEF\xBB\xBF")
        || h.starts_with(b"\xFF\xFE")
        || h.starts_with(b"\xFE\xFF")
    {
        return true;
    }
    if h.contains(&0) {
        return false;
    }
    let control =
        h.iter().filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0C | 0x1B)).count();
    control * 100 <= h.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        assert_eq!(detect(b"\xFF\xD8\xFF\xE0\0\x10JFIF"), Some(Format::Jpeg));
        assert_eq!(detect(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some(Format::Png));
        assert_eq!(detect(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::WebP));
        assert_eq!(detect(b"RIFF\0\0\0\0WAVEfmt "), Some(Format::Wav));
        assert_eq!(detect(b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41"), Some(Format::IsoBmff));
        assert_eq!(detect(b"\0\0\0\x1cftypM4A \0\0\x02\0M4A isommp42"), Some(Format::IsoBmff));
        assert_eq!(detect(b"\0\0\0\x14ftypqt  \0\0\x02\0qt  "), Some(Format::QuickTime));
        assert_eq!(detect(b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf"), Some(Format::Avif));
        assert_eq!(detect(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"), Some(Format::Heic));
        assert_eq!(detect(b"\0\0\0\x18ftypcrx \0\0\0\x01crx isom"), Some(Format::CanonCr3));
        // Canon's movie raw shares the brand and stays with ISO BMFF.
        let crm = b"\0\0\0\x18ftypcrx \0\0\0\x01crx isom\0\0\0\x26CNCVCanonCRM0001/00.09.00";
        assert_eq!(detect(crm), Some(Format::IsoBmff));
        assert_eq!(detect(b"%PDF-1.7\n"), Some(Format::Pdf));
        assert_eq!(detect(b"<?xml version=\"1.0\"?>\n<!-- x -->\n<svg width=\"1\">"), Some(Format::Svg));
        assert_eq!(detect(b"<html><body>hi</body></html>"), Some(Format::Text));
        assert_eq!(detect(b""), Some(Format::Text));
        assert_eq!(detect(b"\0\x01\x02\x03\x04binary"), None);
    }

    #[test]
    fn dicom_with_and_without_preamble() {
        let mut with = vec![0u8; 128];
        with.extend_from_slice(b"DICM\x02\0\0\0UL\x04\0");
        assert_eq!(detect(&with), Some(Format::Dicom));
        assert_eq!(detect(b"\x02\0\0\0UL\x04\0\xc4\0\0\0"), Some(Format::Dicom));
        assert_eq!(detect(b"DICM\x02\0\0\0UL\x04\0\xc4\0\0\0"), Some(Format::Dicom));
    }

    #[test]
    fn svg_with_an_internal_dtd_subset_is_an_image() {
        let svg = b"<?xml version=\"1.0\"?>\n<!DOCTYPE svg [\n <!ENTITY a \"x>]\">\n]>\n<svg width=\"1\"/>";
        assert_eq!(detect(svg), Some(Format::Svg));
        // The doctype's name alone decides when the subset runs past the window.
        let mut long = b"<!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 1.1//EN\" \"x.dtd\" [".to_vec();
        long.extend(b"<!ENTITY a \"b\">".repeat(1000));
        assert_eq!(detect(&long[..SNIFF_LEN]), Some(Format::Svg));
        // A subset skipped properly leads to the root, which decides.
        let html = b"<!DOCTYPE html [ <!ENTITY a \"<svg>\"> ]>\n<html><svg/></html>";
        assert_eq!(detect(html), Some(Format::Text));
        let other = b"<!DOCTYPE x [ <!ENTITY a \"]>\"> ]>\n<svg width=\"1\"/>";
        assert_eq!(detect(other), Some(Format::Svg));
    }

    #[test]
    fn dicm_at_128_outranks_a_tiff_header_at_0() {
        // Dual-personality DICOM/TIFF: the preamble holds a TIFF header.
        let mut dual = b"II*\0\x08\0\0\0".to_vec();
        dual.resize(128, 0);
        dual.extend_from_slice(b"DICM\x02\0\0\0UL\x04\0");
        assert_eq!(detect(&dual), Some(Format::Dicom));
        assert_eq!(detect(&dual[..128]), Some(Format::Tiff));
    }

    #[test]
    fn a_gzip_is_nifti_only_if_it_inflates_to_a_nifti_header() {
        use std::io::Write;
        let gz = |bytes: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        };
        let mut nifti = vec![0u8; 352];
        nifti[..4].copy_from_slice(&348i32.to_le_bytes());
        nifti[344..348].copy_from_slice(b"n+1\0");
        assert_eq!(detect(&nifti), Some(Format::Nifti));
        assert_eq!(detect(&gz(&nifti)), Some(Format::NiftiGz));
        assert_eq!(detect(&gz(&[b'a'; 600])), None);
        assert_eq!(detect(b"NRRD0004\ndimension: 3\n"), Some(Format::Nrrd));
    }

    #[test]
    fn every_format_has_one_descriptor() {
        for (i, d) in DESCRIPTORS.iter().enumerate() {
            let first = DESCRIPTORS.iter().position(|e| e.format == d.format).unwrap();
            assert_eq!(first, i, "{:?} has two descriptors", d.format);
            assert!(!d.signatures.is_empty(), "{:?} can never be detected", d.format);
            assert!(d.extensions.iter().all(|e| *e == e.to_ascii_lowercase()), "{:?}", d.format);
        }
    }

    #[test]
    fn every_signature_fits_the_sniff_window() {
        for d in DESCRIPTORS {
            for s in d.signatures {
                assert!(s.magic.iter().all(|(off, m)| off + m.len() <= SNIFF_LEN), "{:?}", d.format);
                assert!(
                    !s.magic.is_empty() || s.check.is_some(),
                    "{:?} has a signature matching all",
                    d.format
                );
            }
        }
    }

    #[test]
    fn whole_file_readers_are_text_pdf_and_adts() {
        let whole: Vec<Format> = DESCRIPTORS.iter().filter(|d| d.whole_file).map(|d| d.format).collect();
        assert_eq!(whole, [Format::Adts, Format::Pdf, Format::Text]);
    }

    #[test]
    fn mp3_needs_two_consecutive_frames() {
        // MPEG-1 layer III, 128 kbps, 44.1 kHz: 417-byte frames.
        let mut two = vec![0u8; 417 * 2 + 4];
        two[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x00]);
        two[417..421].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x00]);
        assert_eq!(detect(&two), Some(Format::Mp3));
        let mut one = two.clone();
        one[417] = b'x';
        assert_eq!(detect(&one), None);
    }
}
