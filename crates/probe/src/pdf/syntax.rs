//! PDF syntax: a tokenizer over random-access bytes and a parser for one object at a
//! time. The parser keeps an explicit stack (no recursion) no deeper than the nesting
//! limit, charges what it materialises to a byte budget, and can skip a value without
//! building it, so a page dictionary's `/Resources` or `/Annots` cost no memory at all.

use std::io::{self, Seek, SeekFrom};

use super::{Failure, Res, broken, hostile};
use crate::{ProbeError, SourceFile};

/// An object number and generation.
pub(crate) type ObjectId = (u32, u16);

/// What one parsed object costs in memory besides its heap bytes: the enum itself.
pub(crate) const OBJECT_COST: u64 = std::mem::size_of::<Object>() as u64;

/// Random-access bytes: the file, or a decoded object stream.
pub(crate) trait Bytes {
    fn size(&self) -> u64;
    /// The byte at `pos`; `None` at or past the end.
    fn byte(&mut self, pos: u64) -> io::Result<Option<u8>>;
}

impl Bytes for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn byte(&mut self, pos: u64) -> io::Result<Option<u8>> {
        Ok(usize::try_from(pos).ok().and_then(|i| self.get(i)).copied())
    }
}

/// The file, read through a few aligned windows: objects are parsed where the xref says
/// they are, so access jumps around (between a table at the end and objects at the
/// front, typically) but is local within an object.
pub(crate) struct FileBytes {
    file: SourceFile,
    size: u64,
    /// The most recently used window first.
    windows: Vec<Window>,
    /// The buffer of [`FileBytes::chunk`], for scans.
    scan: Vec<u8>,
}

struct Window {
    start: u64,
    buf: Vec<u8>,
}

/// Window size: most page tree objects fit in one, and a jump costs one read of it.
const WINDOW: u64 = 16 * 1024;
const WINDOWS: usize = 4;

impl FileBytes {
    pub(crate) fn new(file: SourceFile, size: u64) -> Self {
        FileBytes { file, size, windows: Vec::new(), scan: Vec::new() }
    }

    /// Up to `len` bytes from `pos`, fewer at the end of the file.
    pub(crate) fn read_at(&mut self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.size.saturating_sub(pos)).unwrap_or(usize::MAX).min(len);
        let mut out = vec![0u8; len];
        self.file.seek(SeekFrom::Start(pos))?;
        let n = crate::read_up_to(&mut self.file, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// The bytes from `pos` on that one read of `len` bytes gives (empty at the end):
    /// for scans over the whole file.
    pub(crate) fn chunk(&mut self, pos: u64, len: u64) -> io::Result<&[u8]> {
        let len = usize::try_from(len.min(self.size.saturating_sub(pos))).unwrap_or(usize::MAX);
        self.scan.resize(len, 0);
        self.file.seek(SeekFrom::Start(pos))?;
        let n = crate::read_up_to(&mut self.file, &mut self.scan)?;
        self.scan.truncate(n);
        Ok(&self.scan)
    }

    #[cold]
    fn byte_slow(&mut self, pos: u64) -> io::Result<Option<u8>> {
        if pos >= self.size {
            return Ok(None);
        }
        let hit = self.windows.iter().position(|w| pos.wrapping_sub(w.start) < w.buf.len() as u64);
        let i = match hit {
            Some(i) => i,
            None => {
                let mut w = if self.windows.len() < WINDOWS {
                    Window { start: 0, buf: Vec::new() }
                } else {
                    self.windows.pop().expect("WINDOWS > 0")
                };
                w.start = pos - pos % WINDOW;
                let len = usize::try_from(WINDOW.min(self.size - w.start)).unwrap_or(usize::MAX);
                w.buf.resize(len, 0);
                self.file.seek(SeekFrom::Start(w.start))?;
                let n = crate::read_up_to(&mut self.file, &mut w.buf)?;
                w.buf.truncate(n);
                self.windows.push(w);
                self.windows.len() - 1
            }
        };
        let w = self.windows.remove(i);
        let b = w.buf.get((pos - w.start) as usize).copied();
        self.windows.insert(0, w);
        Ok(b)
    }
}

impl Bytes for FileBytes {
    fn size(&self) -> u64 {
        self.size
    }

    #[inline]
    fn byte(&mut self, pos: u64) -> io::Result<Option<u8>> {
        if let Some(w) = self.windows.first() {
            let i = pos.wrapping_sub(w.start);
            if i < w.buf.len() as u64 {
                return Ok(Some(w.buf[i as usize]));
            }
        }
        self.byte_slow(pos)
    }
}

/// A PDF object as far as the probe needs it (streams are their dictionary plus the
/// offset of their data, see [`Indirect`]).
#[derive(Debug, PartialEq)]
pub(crate) enum Object {
    Null,
    Bool(bool),
    Int(i64),
    Real(f64),
    Name(Box<[u8]>),
    Str(Box<[u8]>),
    Array(Vec<Object>),
    Dict(Dict),
    Ref(ObjectId),
}

#[derive(Debug, Default, PartialEq)]
pub(crate) struct Dict(pub(crate) Vec<(Box<[u8]>, Object)>);

impl Dict {
    pub(crate) fn get(&self, key: &[u8]) -> Option<&Object> {
        self.0.iter().find(|(k, _)| &k[..] == key).map(|(_, v)| v)
    }

    pub(crate) fn name(&self, key: &[u8]) -> Option<&[u8]> {
        match self.get(key) {
            Some(Object::Name(n)) => Some(n),
            _ => None,
        }
    }

    pub(crate) fn int(&self, key: &[u8]) -> Option<i64> {
        match self.get(key) {
            Some(Object::Int(i)) => Some(*i),
            _ => None,
        }
    }
}

impl Object {
    pub(crate) fn as_dict(&self) -> Option<&Dict> {
        match self {
            Object::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The dictionary inside (objects cannot be destructured: they implement `Drop`).
    pub(crate) fn into_dict(mut self) -> Option<Dict> {
        match &mut self {
            Object::Dict(d) => Some(std::mem::take(d)),
            _ => None,
        }
    }

    fn is_container(&self) -> bool {
        matches!(self, Object::Array(_) | Object::Dict(_))
    }
}

/// Tears nested containers down with a heap stack: the derived drop recursed once per
/// level, so a value nested as deep as `limits.max_nesting` allows could overflow the
/// thread's stack just by being freed.
impl Drop for Object {
    fn drop(&mut self) {
        let mut stack: Vec<Object> = match self {
            Object::Array(items) if items.iter().any(Object::is_container) => std::mem::take(items),
            Object::Dict(d) if d.0.iter().any(|(_, v)| v.is_container()) => {
                std::mem::take(&mut d.0).into_iter().map(|(_, v)| v).collect()
            }
            _ => return,
        };
        while let Some(mut child) = stack.pop() {
            match &mut child {
                Object::Array(items) => stack.append(items),
                Object::Dict(d) => stack.extend(std::mem::take(&mut d.0).into_iter().map(|(_, v)| v)),
                _ => {}
            }
            // `child` is dropped here with no children left.
        }
    }
}

/// A top-level object: its value and, for a stream, where its data starts.
#[derive(Debug)]
pub(crate) struct Indirect {
    pub(crate) value: Object,
    pub(crate) stream: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bracket {
    Array,
    Dict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    True,
    False,
    Null,
    R,
    Obj,
    EndObj,
    Stream,
    EndStream,
    Xref,
    Trailer,
    StartXref,
    Other,
}

impl Keyword {
    fn from_bytes(b: &[u8]) -> Keyword {
        match b {
            b"true" => Keyword::True,
            b"false" => Keyword::False,
            b"null" => Keyword::Null,
            b"R" => Keyword::R,
            b"obj" => Keyword::Obj,
            b"endobj" => Keyword::EndObj,
            b"stream" => Keyword::Stream,
            b"endstream" => Keyword::EndStream,
            b"xref" => Keyword::Xref,
            b"trailer" => Keyword::Trailer,
            b"startxref" => Keyword::StartXref,
            _ => Keyword::Other,
        }
    }

    /// Keywords that end an object: inside a value they mean the value never closed.
    fn is_structural(self) -> bool {
        matches!(
            self,
            Keyword::Obj
                | Keyword::EndObj
                | Keyword::Stream
                | Keyword::EndStream
                | Keyword::Xref
                | Keyword::Trailer
                | Keyword::StartXref
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token {
    Int(i64),
    Real(f64),
    Name(Vec<u8>),
    Str(Vec<u8>),
    Open(Bracket),
    Close(Bracket),
    Keyword(Keyword),
    Eof,
}

/// Longest name kept (the format's own limit is 127 bytes); a longer one is read whole
/// and kept cut, so it matches no key the probe looks for.
const MAX_NAME: usize = 256;

fn is_whitespace(b: u8) -> bool {
    matches!(b, b'\0' | b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

fn is_delimiter(b: u8) -> bool {
    matches!(b, b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%')
}

fn is_regular(b: u8) -> bool {
    !is_whitespace(b) && !is_delimiter(b)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Tokens from `pos` up to `end`.
pub(crate) struct Lexer<'a, B: Bytes> {
    src: &'a mut B,
    pub(crate) pos: u64,
    end: u64,
    /// The longest string collected (a parser's memory budget); longer is `TooLarge`.
    string_cap: usize,
}

impl<'a, B: Bytes> Lexer<'a, B> {
    pub(crate) fn new(src: &'a mut B, pos: u64) -> Self {
        let end = src.size();
        Lexer { src, pos, end, string_cap: usize::MAX }
    }

    fn collect(&self, out: &mut Vec<u8>, byte: u8) -> Res<()> {
        if out.len() >= self.string_cap {
            return Err(Failure::Final(ProbeError::TooLarge {
                what: "a PDF string in memory".into(),
                limit: self.string_cap as u64,
            }));
        }
        out.push(byte);
        Ok(())
    }

    #[inline]
    fn peek(&mut self) -> Res<Option<u8>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        Ok(self.src.byte(self.pos)?)
    }

    #[inline]
    fn bump(&mut self) -> Res<Option<u8>> {
        let b = self.peek()?;
        if b.is_some() {
            self.pos += 1;
        }
        Ok(b)
    }

    pub(crate) fn next_byte(&mut self) -> Res<Option<u8>> {
        self.bump()
    }

    pub(crate) fn skip_whitespace(&mut self) -> Res<()> {
        while let Some(b) = self.peek()? {
            if is_whitespace(b) {
                self.pos += 1;
            } else if b == b'%' {
                while let Some(c) = self.bump()? {
                    if c == b'\n' || c == b'\r' {
                        break;
                    }
                }
            } else {
                break;
            }
        }
        Ok(())
    }

    /// The next token. Unless `keep`, names and strings are scanned but not collected.
    pub(crate) fn next(&mut self, keep: bool) -> Res<Token> {
        self.skip_whitespace()?;
        let Some(b) = self.bump()? else { return Ok(Token::Eof) };
        Ok(match b {
            b'[' => Token::Open(Bracket::Array),
            b']' => Token::Close(Bracket::Array),
            b'<' if self.peek()? == Some(b'<') => {
                self.pos += 1;
                Token::Open(Bracket::Dict)
            }
            b'<' => Token::Str(self.hex_string(keep)?),
            b'>' if self.peek()? == Some(b'>') => {
                self.pos += 1;
                Token::Close(Bracket::Dict)
            }
            b'(' => Token::Str(self.literal_string(keep)?),
            b'/' => Token::Name(self.name(keep)?),
            b'0'..=b'9' | b'+' | b'-' | b'.' => self.number(b)?,
            b'>' | b')' | b'{' | b'}' => Token::Keyword(Keyword::Other),
            _ => {
                let mut word = [0u8; 10];
                word[0] = b;
                let mut len = 1;
                while let Some(c) = self.peek()? {
                    if !is_regular(c) {
                        break;
                    }
                    if len < word.len() {
                        word[len] = c;
                    }
                    len += 1;
                    self.pos += 1;
                }
                Token::Keyword(if len <= word.len() {
                    Keyword::from_bytes(&word[..len])
                } else {
                    Keyword::Other
                })
            }
        })
    }

    fn name(&mut self, keep: bool) -> Res<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = self.peek()? {
            if !is_regular(c) {
                break;
            }
            self.pos += 1;
            let mut byte = c;
            if c == b'#' {
                let save = self.pos;
                match (self.bump()?.and_then(hex), self.bump()?.and_then(hex)) {
                    (Some(h), Some(l)) => byte = h << 4 | l,
                    _ => self.pos = save,
                }
            }
            if keep && out.len() < MAX_NAME {
                out.push(byte);
            }
        }
        Ok(out)
    }

    fn hex_string(&mut self, keep: bool) -> Res<Vec<u8>> {
        let mut out = Vec::new();
        let mut high: Option<u8> = None;
        loop {
            let Some(c) = self.bump()? else { return Err(broken("a hex string runs to the end")) };
            if c == b'>' {
                break;
            }
            if is_whitespace(c) {
                continue;
            }
            // Readers skip what is not a hex digit; so do we.
            let Some(v) = hex(c) else { continue };
            match high.take() {
                Some(h) if keep => self.collect(&mut out, h << 4 | v)?,
                Some(_) => {}
                None => high = Some(v),
            }
        }
        if let Some(h) = high
            && keep
        {
            out.push(h << 4);
        }
        Ok(out)
    }

    /// A literal string: balanced parentheses (a counter), escapes, line continuations.
    fn literal_string(&mut self, keep: bool) -> Res<Vec<u8>> {
        let mut out = Vec::new();
        let mut depth: u64 = 1;
        loop {
            let Some(c) = self.bump()? else { return Err(broken("a string runs to the end")) };
            let byte = match c {
                b'(' => {
                    depth += 1;
                    c
                }
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(out);
                    }
                    c
                }
                b'\\' => {
                    let Some(e) = self.bump()? else { return Err(broken("a string runs to the end")) };
                    match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'0'..=b'7' => {
                            let mut v = u32::from(e - b'0');
                            for _ in 0..2 {
                                match self.peek()? {
                                    Some(d @ b'0'..=b'7') => {
                                        v = v * 8 + u32::from(d - b'0');
                                        self.pos += 1;
                                    }
                                    _ => break,
                                }
                            }
                            v as u8
                        }
                        b'\r' => {
                            if self.peek()? == Some(b'\n') {
                                self.pos += 1;
                            }
                            continue;
                        }
                        b'\n' => continue,
                        other => other,
                    }
                }
                _ => c,
            };
            if keep {
                self.collect(&mut out, byte)?;
            }
        }
    }

    /// An integer or a real. A malformed number (`1.2.3`, `--4`) reads as far as it makes
    /// sense, as readers do; digits past what an `i64` holds make it a real.
    fn number(&mut self, first: u8) -> Res<Token> {
        let mut text = [0u8; 32];
        let mut len = 0;
        let mut push = |c: u8| {
            if len < text.len() {
                text[len] = c;
            }
            len += 1;
        };
        push(first);
        let mut dot = first == b'.';
        while let Some(c) = self.peek()? {
            match c {
                b'0'..=b'9' => push(c),
                b'.' if !dot => {
                    dot = true;
                    push(c);
                }
                // A second sign or dot ends nothing in practice; skip it, as pdf.js does.
                b'-' | b'+' | b'.' => {}
                _ => break,
            }
            self.pos += 1;
        }
        let text = std::str::from_utf8(&text[..len.min(32)]).unwrap_or("0");
        if !dot
            && len <= 19
            && let Ok(i) = text.parse::<i64>()
        {
            return Ok(Token::Int(i));
        }
        let real = if len > 32 { f64::INFINITY } else { text.parse::<f64>().unwrap_or(0.0) };
        Ok(Token::Real(real))
    }
}

/// One object at a time, under a depth limit and a byte budget.
pub(crate) struct Parser<'a, B: Bytes> {
    pub(crate) lex: Lexer<'a, B>,
    max_depth: u32,
    /// Bytes this parse may still materialise.
    budget: u64,
    /// Bytes materialised so far.
    pub(crate) used: u64,
}

/// The top-level keys the probe reads from any dictionary it parses selectively (page
/// tree nodes, catalog, trailers, xref and object streams, the encryption dictionary);
/// every other value is skipped without being built.
const KEPT_KEYS: &[&[u8]] = &[
    b"Type",
    b"Kids",
    b"Count",
    b"MediaBox",
    b"CropBox",
    b"Rotate",
    b"Pages",
    b"Root",
    b"Encrypt",
    b"Prev",
    b"Size",
    b"XRefStm",
    b"ID",
    b"W",
    b"Index",
    b"Filter",
    b"DecodeParms",
    b"Length",
    b"N",
    b"First",
    b"Extends",
    b"V",
    b"R",
    b"O",
    b"U",
    b"P",
    b"CF",
    b"StmF",
    b"StrF",
    b"EFF",
    b"OE",
    b"UE",
    b"Perms",
    b"EncryptMetadata",
    b"SubFilter",
];

enum Frame {
    Array(Vec<Object>),
    Dict(Vec<(Box<[u8]>, Object)>, Option<Box<[u8]>>),
}

impl<'a, B: Bytes> Parser<'a, B> {
    pub(crate) fn new(src: &'a mut B, pos: u64, max_depth: u32, budget: u64) -> Self {
        let mut lex = Lexer::new(src, pos);
        lex.string_cap = usize::try_from(budget).unwrap_or(usize::MAX);
        Parser { lex, max_depth, budget, used: 0 }
    }

    fn charge(&mut self, bytes: u64) -> Res<()> {
        self.used += bytes;
        if self.used > self.budget {
            return Err(Failure::Final(ProbeError::TooLarge {
                what: "a PDF object in memory".into(),
                limit: self.budget,
            }));
        }
        Ok(())
    }

    fn too_deep(&self) -> Failure {
        hostile(format!("an object nests deeper than {} levels", self.max_depth))
    }

    /// After an integer `n`: `n g R` is a reference; otherwise the position is restored.
    fn reference_after(&mut self, n: i64) -> Res<Option<ObjectId>> {
        let Ok(num) = u32::try_from(n) else { return Ok(None) };
        let save = self.lex.pos;
        if let Token::Int(g) = self.lex.next(false)?
            && let Ok(generation) = u16::try_from(g)
            && self.lex.next(false)? == Token::Keyword(Keyword::R)
        {
            return Ok(Some((num, generation)));
        }
        self.lex.pos = save;
        Ok(None)
    }

    /// The next value, materialised.
    pub(crate) fn value(&mut self, depth: u32) -> Res<Object> {
        let first = self.lex.next(true)?;
        self.value_from(first, depth)
    }

    /// A value whose first token is read already. `depth` counts the containers around it.
    fn value_from(&mut self, first: Token, depth: u32) -> Res<Object> {
        let mut stack: Vec<Frame> = Vec::new();
        let mut token = Some(first);
        loop {
            // In a dictionary waiting for a key, only a name or the end may come.
            if let Some(Frame::Dict(entries, pending @ None)) = stack.last_mut() {
                match token.take().map_or_else(|| self.lex.next(true), Ok)? {
                    Token::Name(key) => {
                        self.charge(key.len() as u64)?;
                        *pending = Some(key.into_boxed_slice());
                        continue;
                    }
                    Token::Close(Bracket::Dict) => {
                        let entries = std::mem::take(entries);
                        stack.pop();
                        let done = Object::Dict(Dict(entries));
                        match place(&mut stack, done) {
                            Some(v) => return Ok(v),
                            None => continue,
                        }
                    }
                    other if is_stray(&other) => continue,
                    other => return Err(broken(format!("a dictionary key is {other:?}"))),
                }
            }
            let tok = match token.take() {
                Some(t) => t,
                None => self.lex.next(true)?,
            };
            let value = match tok {
                Token::Open(kind) => {
                    if depth + stack.len() as u32 + 1 > self.max_depth {
                        return Err(self.too_deep());
                    }
                    self.charge(OBJECT_COST)?;
                    stack.push(match kind {
                        Bracket::Array => Frame::Array(Vec::new()),
                        Bracket::Dict => Frame::Dict(Vec::new(), None),
                    });
                    continue;
                }
                Token::Close(Bracket::Array) => match stack.pop() {
                    Some(Frame::Array(items)) => Object::Array(items),
                    _ => return Err(broken("a ] closes nothing")),
                },
                Token::Close(Bracket::Dict) => return Err(broken("a >> where a value is expected")),
                Token::Int(n) => {
                    self.charge(OBJECT_COST)?;
                    match self.reference_after(n)? {
                        Some(id) => Object::Ref(id),
                        None => Object::Int(n),
                    }
                }
                Token::Real(r) => {
                    self.charge(OBJECT_COST)?;
                    Object::Real(r)
                }
                Token::Name(n) => {
                    self.charge(OBJECT_COST + n.len() as u64)?;
                    Object::Name(n.into_boxed_slice())
                }
                Token::Str(s) => {
                    self.charge(OBJECT_COST + s.len() as u64)?;
                    Object::Str(s.into_boxed_slice())
                }
                Token::Keyword(Keyword::True) => Object::Bool(true),
                Token::Keyword(Keyword::False) => Object::Bool(false),
                Token::Keyword(Keyword::Null) => Object::Null,
                // An unknown word is an opaque value to readers (pdf.js keeps it as a
                // command); to us it is worth nothing.
                Token::Keyword(Keyword::Other) => Object::Null,
                Token::Keyword(k) => return Err(broken(format!("keyword {k:?} where a value is expected"))),
                Token::Eof => return Err(broken("the file ends inside an object")),
            };
            if let Some(v) = place(&mut stack, value) {
                return Ok(v);
            }
        }
    }

    /// Skips the next value without building it: only a stack of bracket kinds (bounded
    /// by the depth limit) is kept, whatever the value's size.
    pub(crate) fn skip_value(&mut self, depth: u32) -> Res<()> {
        let mut open: Vec<Bracket> = Vec::new();
        loop {
            match self.lex.next(false)? {
                Token::Open(kind) => {
                    if depth + open.len() as u32 + 1 > self.max_depth {
                        return Err(self.too_deep());
                    }
                    open.push(kind);
                }
                // The guard pops the bracket it closes.
                Token::Close(kind) if open.pop() != Some(kind) => {
                    return Err(broken("brackets do not match"));
                }
                Token::Int(n) if open.is_empty() => {
                    self.reference_after(n)?;
                }
                Token::Keyword(k) if k.is_structural() => {
                    return Err(broken(format!("keyword {k:?} inside a value")));
                }
                Token::Eof => return Err(broken("the file ends inside an object")),
                _ => {}
            }
            if open.is_empty() {
                return Ok(());
            }
        }
    }

    /// The rest of a dictionary whose `<<` is read: the values of [`KEPT_KEYS`] are
    /// built, every other one skipped.
    fn selective_dict(&mut self) -> Res<Dict> {
        if 1 > self.max_depth {
            return Err(self.too_deep());
        }
        let mut entries = Vec::new();
        loop {
            match self.lex.next(true)? {
                Token::Close(Bracket::Dict) => return Ok(Dict(entries)),
                Token::Name(key) if KEPT_KEYS.contains(&&key[..]) => {
                    let value = self.value(1)?;
                    self.charge(OBJECT_COST + key.len() as u64)?;
                    entries.push((key.into_boxed_slice(), value));
                }
                Token::Name(_) => self.skip_value(1)?,
                other if is_stray(&other) => {}
                other => return Err(broken(format!("a dictionary key is {other:?}"))),
            }
        }
    }

    /// A value at the top of an object: a dictionary is read selectively.
    pub(crate) fn top_value(&mut self) -> Res<Object> {
        match self.lex.next(true)? {
            Token::Open(Bracket::Dict) => Ok(Object::Dict(self.selective_dict()?)),
            other => self.value_from(other, 0),
        }
    }

    /// `N G obj`, then the value, then the start of the stream data if a stream follows.
    /// `expect` is the object the xref promised at this offset.
    pub(crate) fn indirect(&mut self, expect: Option<ObjectId>) -> Res<(ObjectId, Indirect)> {
        let header = (self.lex.next(false)?, self.lex.next(false)?, self.lex.next(false)?);
        let id = match header {
            (Token::Int(n), Token::Int(g), Token::Keyword(Keyword::Obj)) => {
                match (u32::try_from(n), u16::try_from(g)) {
                    (Ok(n), Ok(g)) => (n, g),
                    _ => return Err(broken(format!("object header {n} {g}"))),
                }
            }
            _ => return Err(broken(format!("no object header at {}", self.lex.pos))),
        };
        if let Some(expect) = expect
            && expect != id
        {
            return Err(broken(format!(
                "object {} {} was expected where {} {} is",
                expect.0, expect.1, id.0, id.1
            )));
        }
        let value = self.top_value()?;
        let save = self.lex.pos;
        let stream = match self.lex.next(false)? {
            Token::Keyword(Keyword::Stream) if matches!(value, Object::Dict(_)) => {
                // The data starts after CRLF or LF (a lone CR, or nothing, is tolerated).
                match self.lex.peek()? {
                    Some(b'\r') => {
                        self.lex.pos += 1;
                        if self.lex.peek()? == Some(b'\n') {
                            self.lex.pos += 1;
                        }
                    }
                    Some(b'\n') => self.lex.pos += 1,
                    _ => {}
                }
                Some(self.lex.pos)
            }
            _ => {
                self.lex.pos = save;
                None
            }
        };
        Ok((id, Indirect { value, stream }))
    }
}

/// A single token where a dictionary key belongs, which readers skip (damage, or a
/// writer's slip such as `/O <...> R 6` for `/O <...> /R 6`).
fn is_stray(token: &Token) -> bool {
    match token {
        Token::Int(_) | Token::Real(_) | Token::Str(_) => true,
        Token::Keyword(k) => !k.is_structural(),
        _ => false,
    }
}

/// Puts a finished value into the container on top of `stack`; returns it when there is
/// none (the whole value is done).
fn place(stack: &mut [Frame], value: Object) -> Option<Object> {
    match stack.last_mut() {
        None => Some(value),
        Some(Frame::Array(items)) => {
            items.push(value);
            None
        }
        Some(Frame::Dict(entries, pending)) => {
            // `pending` is set: a key is read before its value (see `value_from`).
            if let Some(key) = pending.take() {
                entries.push((key, value));
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8], depth: u32) -> Res<Object> {
        let mut src = text;
        Parser::new(&mut src, 0, depth, 1 << 20).value(0)
    }

    #[test]
    fn values_references_and_strings() {
        let v = parse(b"[1 0 R 2 -3.5 /Na#6de (a\\(b\\)c\\101\\\n) <41 42 4> << /K [true null] >> 7]", 8)
            .unwrap();
        let Object::Array(items) = &v else { panic!("{v:?}") };
        assert_eq!(items[0], Object::Ref((1, 0)));
        assert_eq!(items[1], Object::Int(2));
        assert_eq!(items[2], Object::Real(-3.5));
        assert_eq!(items[3], Object::Name(b"Name".to_vec().into()));
        assert_eq!(items[4], Object::Str(b"a(b)cA".to_vec().into()));
        assert_eq!(items[5], Object::Str(b"AB@".to_vec().into()));
        let Object::Dict(d) = &items[6] else { panic!() };
        assert_eq!(d.get(b"K"), Some(&Object::Array(vec![Object::Bool(true), Object::Null])));
        assert_eq!(items[7], Object::Int(7));
    }

    #[test]
    fn nesting_stops_at_the_limit() {
        let nest = |n: usize| [b"[".repeat(n), b"]".repeat(n)].concat();
        assert!(parse(&nest(8), 8).is_ok());
        assert!(matches!(parse(&nest(9), 8), Err(Failure::Final(ProbeError::Corrupt { .. }))));
        let mut src: &[u8] = &nest(9);
        let err = Parser::new(&mut src, 0, 8, 1 << 20).skip_value(0).unwrap_err();
        assert!(matches!(err, Failure::Final(ProbeError::Corrupt { .. })));
    }

    #[test]
    fn strings_are_collected_up_to_the_budget_only() {
        let long = [b"(".to_vec(), vec![b'a'; 10_000], b")".to_vec()].concat();
        let mut src: &[u8] = &long;
        let err = Parser::new(&mut src, 0, 8, 4096).value(0).unwrap_err();
        assert!(matches!(err, Failure::Final(ProbeError::TooLarge { limit: 4096, .. })));
        let mut src: &[u8] = &long;
        Parser::new(&mut src, 0, 8, 0).skip_value(0).unwrap();
    }

    #[test]
    fn budget_bounds_what_is_built() {
        let many = [b"[".to_vec(), b"1 ".repeat(10_000), b"]".to_vec()].concat();
        let mut src: &[u8] = &many;
        let err = Parser::new(&mut src, 0, 8, 4096).value(0).unwrap_err();
        assert!(matches!(err, Failure::Final(ProbeError::TooLarge { .. })));
        // Skipping builds nothing.
        let mut src: &[u8] = &many;
        Parser::new(&mut src, 0, 8, 0).skip_value(0).unwrap();
    }
}
