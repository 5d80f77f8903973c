//! The PDF reader's tests: fixtures' structures, each limit, and a regression test per
//! class of issue 9, on files written here (small) or at run time (large, sparse).

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets").join(name)
}

fn probe_with(name: &str, limits: &Limits) -> Result<AssetMetadata> {
    let src = Source::open(&fixture(name))?;
    probe(&src, Format::Pdf, limits)
}

fn probe_bytes(bytes: &[u8], limits: &Limits) -> Result<AssetMetadata> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.pdf");
    std::fs::write(&path, bytes).unwrap();
    probe(&Source::open(&path)?, Format::Pdf, limits)
}

fn summary(m: &AssetMetadata) -> (Option<u32>, Option<u32>, Option<u32>) {
    (m.page_count, m.width, m.height)
}

/// Writes objects in order and a classic xref table with their offsets.
struct Writer {
    out: Vec<u8>,
    offsets: Vec<(u32, usize)>,
}

impl Writer {
    fn new() -> Self {
        Writer { out: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec(), offsets: Vec::new() }
    }

    fn obj(&mut self, num: u32, body: &[u8]) -> &mut Self {
        self.offsets.push((num, self.out.len()));
        self.out.extend_from_slice(format!("{num} 0 obj\n").as_bytes());
        self.out.extend_from_slice(body);
        self.out.extend_from_slice(b"\nendobj\n");
        self
    }

    fn finish(&mut self, trailer_extra: &str) -> Vec<u8> {
        let size = self.offsets.iter().map(|&(n, _)| n).max().unwrap_or(0) + 1;
        let xref = self.out.len();
        self.out.extend_from_slice(format!("xref\n0 {size}\n0000000000 65535 f \n").as_bytes());
        // The last object written with a number is the one the table names.
        let latest: std::collections::HashMap<u32, usize> = self.offsets.iter().copied().collect();
        for num in 1..size {
            match latest.get(&num) {
                Some(at) => self.out.extend_from_slice(format!("{at:010} 00000 n \n").as_bytes()),
                None => self.out.extend_from_slice(b"0000000000 65535 f \n"),
            }
        }
        self.out.extend_from_slice(
            format!("trailer\n<< /Size {size} /Root 1 0 R {trailer_extra}>>\nstartxref\n{xref}\n%%EOF\n")
                .as_bytes(),
        );
        std::mem::take(&mut self.out)
    }
}

const CATALOG: &[u8] = b"<< /Type /Catalog /Pages 2 0 R >>";
const PAGES: &[u8] = b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>";
const PAGE: &[u8] = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>";

fn one_page(page: &[u8]) -> Vec<u8> {
    Writer::new().obj(1, CATALOG).obj(2, PAGES).obj(3, page).finish("")
}

/// Runs `f` on a thread with a 256 KiB stack: a parser or walk that recursed per level
/// would overflow it long before 100,000 levels.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(256 * 1024).spawn(f).unwrap().join().unwrap()
}

#[test]
fn broken_xref_offsets_are_rebuilt_by_a_scan() {
    // Every offset is 38 bytes off, startxref too: no xref where it points, and the scan
    // finds every object.
    let m = probe_with("pdf/broken-xref-offsets.pdf", &Limits::default()).unwrap();
    assert_eq!(summary(&m), (Some(3), Some(612), Some(792)));
    let src = Source::open(&fixture("pdf/broken-xref-offsets.pdf")).unwrap();
    let mut doc = Doc::new(FileBytes::new(src.file().unwrap(), src.size()), &Limits::default());
    assert!(matches!(doc.load_xref(), Err(Failure::Repairable(_))));
    doc.repair().unwrap();
    assert_eq!(summarize(&mut doc, &Limits::default()).unwrap(), (3, 612, 792));
}

#[test]
fn objects_outside_the_page_tree_are_never_parsed() {
    // Object 4 is garbage that would fail any parse, and nothing refers to it.
    let bytes = Writer::new().obj(1, CATALOG).obj(2, PAGES).obj(3, PAGE).obj(4, b"<< ] >> ((").finish("");
    assert_eq!(summary(&probe_bytes(&bytes, &Limits::default()).unwrap()), (Some(1), Some(612), Some(792)));
}

#[test]
fn a_large_honest_pdf_is_read_in_bounded_memory() {
    // 100 MB of content stream (sparse on disk) between the page tree and the xref:
    // read with a 1 MiB memory limit, because nothing of it is held.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.pdf");
    let mut w = Writer::new();
    w.obj(1, CATALOG)
        .obj(2, PAGES)
        .obj(3, b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>");
    let big = 100u64 << 20;
    w.offsets.push((4, w.out.len()));
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&w.out).unwrap();
    f.write_all(format!("4 0 obj\n<< /Length {big} >>\nstream\n").as_bytes()).unwrap();
    f.seek(SeekFrom::Current(big as i64)).unwrap();
    f.write_all(b"\nendstream\nendobj\n").unwrap();
    let at = f.stream_position().unwrap() as usize;
    w.out = vec![0; at];
    let tail = w.finish("");
    f.write_all(&tail[at..]).unwrap();
    drop(f);
    let tight = Limits { max_memory_bytes: 1 << 20, ..Limits::default() };
    let m = probe(&Source::open(&path).unwrap(), Format::Pdf, &tight).unwrap();
    assert_eq!(summary(&m), (Some(1), Some(612), Some(792)));
    assert!(m.size_bytes > big);
}

#[test]
fn page_tree_depth_follows_max_nesting() {
    // The first page of this file sits two levels below the root.
    let shallow = Limits { max_nesting: 1, ..Limits::default() };
    let err = probe_with("pdf/inherited-box-rotate.pdf", &shallow).unwrap_err();
    assert_eq!(err.code(), asset_core::ErrorCode::CorruptFile, "{err}");
    let enough = Limits { max_nesting: 2, ..Limits::default() };
    assert_eq!(probe_with("pdf/inherited-box-rotate.pdf", &enough).unwrap().page_count, Some(2));
}

/// `levels` nested /Pages nodes, one page at the bottom, in a classic table.
fn deep_page_tree(levels: u32) -> Vec<u8> {
    let mut w = Writer::new();
    w.obj(1, CATALOG);
    for i in 0..levels {
        w.obj(2 + i, format!("<< /Type /Pages /Kids [{} 0 R] /Count 1 >>", 3 + i).as_bytes());
    }
    w.obj(2 + levels, PAGE);
    w.finish("")
}

#[test]
fn a_page_tree_of_100_000_levels_costs_no_stack() {
    let bytes = deep_page_tree(100_000);
    let (deep, shallow) = on_small_stack(move || {
        let deep = Limits { max_nesting: 100_001, ..Limits::default() };
        (probe_bytes(&bytes, &deep), probe_bytes(&bytes, &Limits::default()))
    });
    assert_eq!(summary(&deep.unwrap()), (Some(1), Some(612), Some(792)));
    let err = shallow.unwrap_err();
    assert!(err.to_string().contains("nested deeper than 64"), "{err}");
}

#[test]
fn object_nesting_stops_at_max_nesting() {
    // In a value the probe skips (/Annots) and in one it reads (/MediaBox).
    for key in ["Annots", "MediaBox"] {
        let page = |depth: usize| {
            let nest = format!("{}0 0 612 792{}", "[".repeat(depth), "]".repeat(depth));
            format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /{key} {nest} >>")
        };
        // The page dictionary is one level; its value may add max_nesting - 1.
        let limits = Limits { max_nesting: 10, ..Limits::default() };
        let ok = probe_bytes(&one_page(page(9).as_bytes()), &limits).unwrap();
        assert_eq!(ok.page_count, Some(1), "{key}");
        let err = probe_bytes(&one_page(page(10).as_bytes()), &limits).unwrap_err();
        assert!(err.to_string().contains("nests deeper than 10"), "{key}: {err}");
    }
}

#[test]
fn object_nesting_of_100_000_levels_costs_no_stack() {
    let nest = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let skipped =
        one_page(format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 9 9] /Annots {nest} >>").as_bytes());
    let built =
        one_page(format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 9 9] /CropBox {nest} >>").as_bytes());
    let (skipped, built) = on_small_stack(move || {
        let deep = Limits { max_nesting: 100_001, ..Limits::default() };
        (probe_bytes(&skipped, &deep), probe_bytes(&built, &deep))
    });
    assert_eq!(summary(&skipped.unwrap()), (Some(1), Some(9), Some(9)));
    // A CropBox that is no rectangle is ignored; building and dropping it took no stack.
    assert_eq!(summary(&built.unwrap()), (Some(1), Some(9), Some(9)));
}

#[test]
fn nested_arrays_memory_regression() {
    // Issue 9: 50-level nests side by side took lopdf 300 MB per MB of file. Skipped
    // values build nothing: a 64 KiB memory limit is enough.
    let unit = format!("{}{} ", "[".repeat(50), "]".repeat(50));
    let page =
        format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Annots [{}] >>", unit.repeat(20_000));
    let tight = Limits { max_memory_bytes: 64 << 10, ..Limits::default() };
    assert_eq!(
        summary(&probe_bytes(&one_page(page.as_bytes()), &tight).unwrap()),
        (Some(1), Some(612), Some(792))
    );
}

#[test]
fn nested_dicts_memory_regression() {
    let unit = format!("{}1{} ", "<< /A ".repeat(50), ">>".repeat(50));
    let page =
        format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Annots [{}] >>", unit.repeat(5_000));
    let tight = Limits { max_memory_bytes: 64 << 10, ..Limits::default() };
    assert_eq!(
        summary(&probe_bytes(&one_page(page.as_bytes()), &tight).unwrap()),
        (Some(1), Some(612), Some(792))
    );
}

#[test]
fn values_the_probe_reads_are_built_under_the_memory_limit() {
    let kids: String = (0..50_000).map(|_| "3 0 R ").collect();
    let bytes = Writer::new()
        .obj(1, CATALOG)
        .obj(2, format!("<< /Type /Pages /Kids [{kids}] /Count 50000 >>").as_bytes())
        .obj(3, PAGE)
        .finish("");
    let tight = Limits { max_memory_bytes: 256 << 10, ..Limits::default() };
    let err = probe_bytes(&bytes, &tight).unwrap_err();
    assert!(matches!(err, ProbeError::TooLarge { .. }), "{err}");
    // With room, the same page listed twice is a corrupt tree.
    let err = probe_bytes(&bytes, &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
}

/// One object stream of `count` objects (the page tree is 1–3) and an xref stream.
fn object_stream_pdf(count: u32) -> Vec<u8> {
    let mut head = String::new();
    let mut body = Vec::new();
    for n in 1..=count {
        head.push_str(&format!("{n} {} ", body.len()));
        match n {
            1 => body.extend_from_slice(CATALOG),
            2 => body.extend_from_slice(PAGES),
            3 => body.extend_from_slice(PAGE),
            _ => body.extend_from_slice(format!("{n}").as_bytes()),
        }
        body.push(b'\n');
    }
    head.push('\n');
    let mut plain = head.clone().into_bytes();
    plain.extend_from_slice(&body);
    let data = zlib(&plain);
    let mut out = b"%PDF-1.7\n".to_vec();
    let stream_at = out.len();
    let stream_num = count + 1;
    out.extend_from_slice(
        format!(
            "{stream_num} 0 obj\n<< /Type /ObjStm /N {count} /First {} /Filter /FlateDecode /Length {} >>\nstream\n",
            head.len(),
            data.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\nendstream\nendobj\n");
    let xref_at = out.len();
    let mut rows = vec![0u8, 0, 0, 0, 0, 0, 0xff, 0xff];
    for n in 1..=count {
        rows.push(2);
        rows.extend_from_slice(&stream_num.to_be_bytes());
        rows.extend_from_slice(&(n - 1).to_be_bytes()[1..]);
    }
    for at in [stream_at, xref_at] {
        rows.push(1);
        rows.extend_from_slice(&(at as u32).to_be_bytes());
        rows.extend_from_slice(&[0, 0, 0]);
    }
    let rows = zlib(&rows);
    out.extend_from_slice(
        format!(
            "{} 0 obj\n<< /Type /XRef /Size {} /W [1 4 3] /Root 1 0 R /Filter /FlateDecode /Length {} >>\nstream\n",
            count + 2,
            count + 3,
            rows.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&rows);
    out.extend_from_slice(format!("\nendstream\nendobj\nstartxref\n{xref_at}\n%%EOF\n").as_bytes());
    out
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn objstm_many_objects_memory_regression() {
    // Issue 9: an object stream of a million objects cost lopdf 590 MB. Its header is
    // read into pairs only as far as it goes, and the stream is decoded once.
    let bytes = object_stream_pdf(200_000);
    let m = probe_bytes(&bytes, &Limits::default()).unwrap();
    assert_eq!(summary(&m), (Some(1), Some(612), Some(792)));
    // Decoded, it is larger than a quarter of this limit: too large, not absurd.
    let tight = Limits { max_memory_bytes: 4 << 20, ..Limits::default() };
    let err = probe_bytes(&bytes, &tight).unwrap_err();
    assert!(matches!(err, ProbeError::TooLarge { .. }), "{err}");
}

#[test]
fn xref_entries_pointing_at_one_big_object_regression() {
    // Issue 9: 1,000 xref entries naming the offset of one 20 KB object made lopdf parse
    // it 1,000 times (3.5 s). Here the first entry whose header does not match sends the
    // reader to a rebuild, which finds every object once.
    let filler = "0 ".repeat(10_000);
    let mut w = Writer::new();
    w.obj(1, CATALOG).obj(2, PAGES).obj(3, PAGE);
    w.obj(4, format!("<< /Type /Catalog /Pages 2 0 R /Junk [{filler}] >>").as_bytes());
    let big = w.offsets[3].1;
    w.offsets = (1..=1000).map(|n| (n, big)).collect();
    let bytes = w.finish("");
    let src_dir = tempfile::tempdir().unwrap();
    let path = src_dir.path().join("x.pdf");
    std::fs::write(&path, &bytes).unwrap();
    let src = Source::open(&path).unwrap();
    let mut doc = Doc::new(FileBytes::new(src.file().unwrap(), src.size()), &Limits::default());
    doc.load_xref().unwrap();
    assert!(matches!(summarize(&mut doc, &Limits::default()), Err(Failure::Repairable(_))));
    doc.repair().unwrap();
    assert_eq!(summarize(&mut doc, &Limits::default()).unwrap(), (1, 612, 792));
    // The big object was parsed twice in all: as the catalog the xref named, and as the
    // last catalog the scan found (it is the newest object numbered 4, not the root).
    assert_eq!(summary(&probe_bytes(&bytes, &Limits::default()).unwrap()), (Some(1), Some(612), Some(792)));
}

#[test]
fn pages_are_counted_never_taken_from_count() {
    // A /Count of two billion over one page: the walk counts one.
    let lying = Writer::new()
        .obj(1, CATALOG)
        .obj(2, b"<< /Type /Pages /Kids [3 0 R] /Count 2147483647 >>")
        .obj(3, PAGE)
        .finish("");
    assert_eq!(probe_bytes(&lying, &Limits::default()).unwrap().page_count, Some(1));
    // Kids naming pages that are not in the file: more pages than objects is corrupt.
    let missing = Writer::new()
        .obj(1, CATALOG)
        .obj(2, b"<< /Type /Pages /Kids [3 0 R 4 0 R 5 0 R] /Count 3 >>")
        .obj(3, PAGE)
        .finish("");
    let err = probe_bytes(&missing, &Limits::default()).unwrap_err();
    assert_eq!(err.code(), asset_core::ErrorCode::CorruptFile, "{err}");
}

#[test]
fn incremental_updates_win_and_prev_loops_end() {
    let m = probe_with("pdf/incremental-update.pdf", &Limits::default()).unwrap();
    assert_eq!(summary(&m), (Some(2), Some(400), Some(250)));
    // A /Prev pointing at its own section.
    let mut bytes = one_page(PAGE);
    let startxref = {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let at = text.rfind("startxref\n").unwrap() + 10;
        text[at..].lines().next().unwrap().to_string()
    };
    let trailer_at = bytes.windows(7).rposition(|w| w == b"/Root 1").unwrap();
    bytes.splice(trailer_at..trailer_at, format!("/Prev {startxref} ").bytes());
    assert_eq!(summary(&probe_bytes(&bytes, &Limits::default()).unwrap()), (Some(1), Some(612), Some(792)));
}

#[test]
fn encrypted_files_open_with_the_empty_password_only() {
    let m = probe_with("pdf/encrypted-empty-user.pdf", &Limits::default()).unwrap();
    assert_eq!(summary(&m), (Some(3), Some(612), Some(792)));
    let err = probe_with("pdf/encrypted-user-password.pdf", &Limits::default()).unwrap_err();
    assert!(matches!(err, ProbeError::Encrypted { .. }), "{err}");
}

#[test]
fn page_tree_nodes_follow_max_items() {
    // Root plus three pages: four nodes.
    let few = Limits { max_items: 3, ..Limits::default() };
    let err = probe_with("pdf/plain-3-pages.pdf", &few).unwrap_err();
    assert!(matches!(err, ProbeError::TooLarge { .. }), "{err}");
}

#[test]
fn a_deflate_bomb_in_an_object_stream_is_too_large() {
    // 200,000 objects decode to several MB; a 1 MiB limit caps the stream at 512 KiB.
    let bytes = object_stream_pdf(200_000);
    let tight = Limits { max_memory_bytes: 1 << 20, ..Limits::default() };
    let err = probe_bytes(&bytes, &tight).unwrap_err();
    assert!(matches!(err, ProbeError::TooLarge { .. }), "{err}");
}

#[test]
fn rotation_is_normalised_and_swaps_only_quarter_turns() {
    let page = |rotate| Inherited { media_box: Some([0.0, 0.0, 200.0, 100.0]), crop_box: None, rotate };
    assert_eq!(display_size(page(Some(-90)), (1, 0)).unwrap(), (100, 200));
    assert_eq!(display_size(page(Some(450)), (1, 0)).unwrap(), (100, 200));
    assert_eq!(display_size(page(Some(180)), (1, 0)).unwrap(), (200, 100));
    assert_eq!(display_size(page(None), (1, 0)).unwrap(), (200, 100));
    let huge = Inherited { media_box: Some([0.0, 0.0, 1e300, 1.0]), crop_box: None, rotate: None };
    assert!(display_size(huge, (1, 0)).is_err());
}
