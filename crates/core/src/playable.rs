//! Whether a video or audio file plays in a browser without transcoding: one table of
//! container (MIME type, as the probe reports it) + codec (ffprobe's name) pairs, each
//! with what current Chrome, Firefox and Safari do. The import service warns on `false`
//! before a labeler opens a black frame; nobody else reports this at import.
//!
//! A pair is playable only if all three play it on desktop and mobile; a pair missing
//! from the table is not (unknown is a warning, not a promise). For video the codec is
//! the main video stream's: an audio track in a codec a browser lacks (AC-3 in MP4 on
//! Firefox) still plays as silent video. Sources: MDN "Media container formats" and
//! "Web video/audio codec guide", the browsers' release notes (Chrome 107 HEVC with
//! hardware only, Firefox 133+ HEVC on Windows only, Safari 14.1 WebM VP8/VP9, Safari 15
//! WebM Opus, Safari AV1 only with a hardware decoder), as of late 2025.
//!
//! To add a pair: one row in [`PLAYABLE`], each browser's answer, and a note when one is
//! conditional (hardware, platform) — conditional counts as `false`.

/// One container + codec pair and whether each browser plays it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Playable {
    /// The container's MIME type as the probe reports it (`video/mp4`, `audio/ogg`, …).
    pub mime: &'static str,
    /// The codec as the probe reports it (ffprobe's codec name).
    pub codec: &'static str,
    pub chrome: bool,
    pub firefox: bool,
    pub safari: bool,
}

const fn row(mime: &'static str, codec: &'static str, chrome: bool, firefox: bool, safari: bool) -> Playable {
    Playable { mime, codec, chrome, firefox, safari }
}

/// The table. Rows marked "no" in one browser say why in a comment.
pub static PLAYABLE: &[Playable] = &[
    // --- video ----------------------------------------------------------------------
    row("video/mp4", "h264", true, true, true),
    // Chrome only with a hardware decoder; Firefox only on Windows with one.
    row("video/mp4", "hevc", false, false, true),
    // Safari only with a hardware AV1 decoder (M3, A17 Pro and later).
    row("video/mp4", "av1", true, true, false),
    // MPEG-4 Part 2 (Xvid/DivX): no browser.
    row("video/mp4", "mpeg4", false, false, false),
    // MOV is not a type Chrome or Firefox declare they play, whatever the codec.
    row("video/quicktime", "h264", false, false, true),
    row("video/quicktime", "hevc", false, false, true),
    row("video/quicktime", "prores", false, false, true),
    row("video/webm", "vp8", true, true, true),
    row("video/webm", "vp9", true, true, true),
    // Safari only with a hardware AV1 decoder.
    row("video/webm", "av1", true, true, false),
    // Matroska beyond its WebM subset: no browser declares it.
    row("video/x-matroska", "h264", false, false, false),
    row("video/x-matroska", "hevc", false, false, false),
    row("video/x-matroska", "vp9", false, false, false),
    row("video/x-msvideo", "mjpeg", false, false, false),
    row("video/x-msvideo", "mpeg4", false, false, false),
    row("video/x-msvideo", "h264", false, false, false),
    // Transport and program streams: only Safari plays MPEG-TS, and only through HLS.
    row("video/mp2t", "h264", false, false, false),
    row("video/mp2t", "hevc", false, false, false),
    row("video/mp2t", "mpeg2video", false, false, false),
    row("video/mpeg", "mpeg1video", false, false, false),
    row("video/mpeg", "mpeg2video", false, false, false),
    // ASF (WMV/WMA), FLV and 3GPP: no current browser declares them.
    row("video/x-ms-wmv", "wmv2", false, false, false),
    row("video/x-ms-wmv", "wmv3", false, false, false),
    row("video/x-flv", "h264", false, false, false),
    row("video/x-flv", "flv1", false, false, false),
    row("video/3gpp", "h263", false, false, false),
    row("video/3gpp", "h264", false, false, false),
    row("video/3gpp2", "h264", false, false, false),
    // Theora: Chrome removed it in 2025 and Safari never had it.
    row("video/ogg", "theora", false, true, false),
    // --- audio ----------------------------------------------------------------------
    row("audio/mpeg", "mp3", true, true, true),
    row("audio/aac", "aac", true, true, true),
    row("audio/mp4", "aac", true, true, true),
    // ALAC: Safari only.
    row("audio/mp4", "alac", false, false, true),
    row("audio/flac", "flac", true, true, true),
    row("audio/wav", "pcm_u8", true, true, true),
    row("audio/wav", "pcm_s16le", true, true, true),
    // 24-bit and float WAV: not on every Firefox platform we could confirm.
    row("audio/wav", "pcm_s24le", true, false, true),
    row("audio/wav", "pcm_f32le", true, false, true),
    row("audio/webm", "opus", true, true, true),
    // Ogg: Safari before 18.4 plays neither, and iOS not reliably.
    row("audio/ogg", "vorbis", true, true, false),
    row("audio/ogg", "opus", true, true, false),
    // AIFF: Safari only.
    row("audio/aiff", "pcm_s16be", false, false, true),
    row("audio/aiff", "pcm_s16le", false, false, true),
    // FLAC in MP4: Chrome, Firefox and Safari (macOS 11+/iOS 14+) all declare it.
    row("audio/mp4", "flac", true, true, true),
    // AC-3 / E-AC-3 (Dolby licence) and CAF: Safari only; AMR and WMA: no browser.
    row("audio/ac3", "ac3", false, false, true),
    row("audio/eac3", "eac3", false, false, true),
    row("audio/amr", "amr_nb", false, false, false),
    row("audio/amr-wb", "amr_wb", false, false, false),
    row("audio/x-caf", "pcm_s16le", false, false, true),
    row("audio/x-caf", "alac", false, false, true),
    row("audio/x-ms-wma", "wmav2", false, false, false),
];

/// Whether `codec` in the container `mime` plays in current Chrome, Firefox and Safari
/// alike; `false` for a pair the table does not list.
pub fn browser_playable(mime: &str, codec: &str) -> bool {
    PLAYABLE.iter().any(|p| p.mime == mime && p.codec == codec && p.chrome && p.firefox && p.safari)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_examples() {
        assert!(browser_playable("video/mp4", "h264"));
        assert!(browser_playable("audio/mp4", "aac"));
        assert!(!browser_playable("video/quicktime", "hevc"));
        assert!(!browser_playable("video/x-msvideo", "mjpeg"));
        // Not listed: not promised.
        assert!(!browser_playable("video/x-ms-asf", "wmv3"));
    }

    #[test]
    fn each_pair_has_one_row() {
        for (i, p) in PLAYABLE.iter().enumerate() {
            let first = PLAYABLE.iter().position(|q| (q.mime, q.codec) == (p.mime, p.codec)).unwrap();
            assert_eq!(first, i, "{} {} listed twice", p.mime, p.codec);
        }
    }
}
