//! The document as the page tree walk sees it: objects loaded one at a time by number,
//! from the file or from an object stream decoded on first use (and decrypted when the
//! file is encrypted with an empty user password). What stays in memory is bounded in
//! bytes: the xref's own data, a cache of decoded object streams and one of resolved
//! values, each evicting oldest first; what is parsed and inflated in all is bounded by
//! the file's size, so no object is re-read without end.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::rc::Rc;

use memchr::memmem;

use super::syntax::{Bytes, Dict, FileBytes, Indirect, Lexer, OBJECT_COST, Object, ObjectId, Parser, Token};
use super::xref::{self, Entry, Trailer, Xref};
use super::{Budget, FORMAT, Failure, Res, broken, filter};
use crate::ProbeError;

/// A decoded object stream: its data, where the objects start, and the header's
/// (number, offset) pairs.
#[derive(Debug)]
pub(crate) struct ObjStm {
    data: Vec<u8>,
    first: u64,
    pub(crate) pairs: Vec<(u32, u32)>,
}

/// A map evicting its oldest entries to stay under `cap` bytes, charged to the budget.
struct Cache<K, V> {
    map: HashMap<K, (Rc<V>, u64)>,
    order: VecDeque<K>,
    bytes: u64,
    cap: u64,
}

impl<K: Hash + Eq + Copy, V> Cache<K, V> {
    fn new(cap: u64) -> Self {
        Cache { map: HashMap::new(), order: VecDeque::new(), bytes: 0, cap }
    }

    fn get(&self, key: &K) -> Option<Rc<V>> {
        self.map.get(key).map(|(v, _)| v.clone())
    }

    /// Keeps `value`, evicting the oldest entries to make room; one larger than the cache
    /// is kept alone (an object stream the walk is in the middle of must not be decoded
    /// again for every object it holds).
    fn insert(&mut self, key: K, value: V, size: u64, budget: &mut Budget) -> Res<Rc<V>> {
        let value = Rc::new(value);
        while self.bytes + size > self.cap
            && let Some(old) = self.order.pop_front()
        {
            if let Some((_, s)) = self.map.remove(&old) {
                self.bytes -= s;
                budget.release(s);
            }
        }
        budget.charge(size, "PDF objects cached")?;
        self.bytes += size;
        self.map.insert(key, (value.clone(), size));
        self.order.push_back(key);
        Ok(value)
    }

    fn clear(&mut self, budget: &mut Budget) {
        budget.release(self.bytes);
        self.bytes = 0;
        self.map.clear();
        self.order.clear();
    }
}

/// How many references a value may go through before it is one.
const MAX_HOPS: usize = 16;

pub(crate) struct Doc {
    file: FileBytes,
    max_depth: u32,
    xref: Xref,
    pub(crate) trailer: Trailer,
    crypt: Option<lopdf::EncryptionState>,
    objstms: Cache<u32, ObjStm>,
    values: Cache<ObjectId, Object>,
    pub(crate) budget: Budget,
    lexed: u64,
    max_lexed: u64,
    inflated: u64,
    max_inflated: u64,
}

impl Doc {
    pub(crate) fn new(file: FileBytes, limits: &asset_core::Limits) -> Self {
        let memory = limits.max_memory_bytes;
        let size = file.size();
        Doc {
            file,
            max_depth: limits.max_nesting,
            xref: Xref::default(),
            trailer: Trailer::default(),
            crypt: None,
            objstms: Cache::new(memory / 4),
            values: Cache::new(memory / 16),
            budget: Budget::new(memory),
            lexed: 0,
            // Parsing and inflating are bounded by the file and the memory limit, so
            // a file that makes the reader go over the same bytes again and again stops.
            max_lexed: size.saturating_add(memory).saturating_mul(4),
            inflated: 0,
            max_inflated: memory.saturating_mul(8),
        }
    }

    /// Reads the xref chain and trailer, and the encryption state.
    pub(crate) fn load_xref(&mut self) -> Res<()> {
        let (xref, trailer) = xref::load(&mut self.file, &mut self.budget, self.max_depth)?;
        self.xref = xref;
        self.trailer = trailer;
        self.init_crypt()
    }

    /// Replaces the xref by one rebuilt from a scan of the whole file, with the members
    /// of every object stream found.
    pub(crate) fn repair(&mut self) -> Res<()> {
        self.objstms.clear(&mut self.budget);
        self.values.clear(&mut self.budget);
        self.xref = Xref::default();
        self.budget = Budget::new(self.budget.limit());
        let scan = xref::scan(&mut self.file, &mut self.budget, self.max_depth)?;
        self.xref = scan.xref;
        self.trailer = scan.trailer;
        // An encryption dictionary that cannot be read even now leaves the file as
        // unreadable to us as a password would.
        match self.init_crypt() {
            Err(Failure::Repairable(_)) => {
                return Err(Failure::Final(ProbeError::Encrypted { format: FORMAT }));
            }
            other => other?,
        }
        for num in scan.object_streams {
            let stm = match self.objstm(num) {
                Ok(stm) => stm,
                // A limit or a read error ends the rebuild; one damaged object stream
                // does not spoil the others.
                Err(Failure::Final(e @ (ProbeError::Io(_) | ProbeError::TooLarge { .. }))) => {
                    return Err(Failure::Final(e));
                }
                Err(_) => continue,
            };
            for (index, &(member, _)) in stm.pairs.iter().enumerate() {
                let Ok(index) = u32::try_from(index) else { break };
                if self.xref.add_scanned(member, Entry::InStream { stream: num, index }) {
                    self.budget.charge(xref::SCANNED_ENTRY_COST, "PDF objects found by a rebuild")?;
                }
            }
        }
        Ok(())
    }

    fn work(&mut self, lexed: u64) -> Res<()> {
        self.lexed += lexed;
        if self.lexed > self.max_lexed {
            return Err(Failure::Final(ProbeError::TooLarge {
                what: "bytes parsed in a PDF".into(),
                limit: self.max_lexed,
            }));
        }
        Ok(())
    }

    /// Object `id`, parsed (a dictionary selectively) with the bytes it holds.
    pub(crate) fn object(&mut self, id: ObjectId) -> Res<(Indirect, u64)> {
        let missing = |what: &str| broken(format!("object {} {} {what}", id.0, id.1));
        let entry = self.xref.lookup(&mut self.file, id.0)?.ok_or_else(|| missing("is not in the xref"))?;
        match entry {
            Entry::Free => Err(missing("is free")),
            Entry::At { offset, .. } => {
                if offset >= self.file.size() {
                    return Err(missing("is past the end of the file"));
                }
                let mut parser = Parser::new(&mut self.file, offset, self.max_depth, self.budget.room());
                let parsed = parser.indirect(Some(id));
                let (lexed, used) = (parser.lex.pos.saturating_sub(offset), parser.used);
                self.work(lexed)?;
                Ok((parsed?.1, used))
            }
            Entry::InStream { stream, index } => {
                if id.1 != 0 {
                    return Err(missing("is in an object stream with a generation other than 0"));
                }
                let stm = self.objstm(stream)?;
                match stm.pairs.get(index as usize) {
                    Some(&(num, _)) if num != id.0 => {
                        return Err(missing("is not where its object stream says"));
                    }
                    None => return Err(missing("is past the end of its object stream")),
                    Some(_) => {}
                }
                let start = stm.first + u64::from(stm.pairs[index as usize].1);
                let mut data: &[u8] = &stm.data;
                let mut parser = Parser::new(&mut data, start, self.max_depth, self.budget.room());
                let value = parser.top_value();
                let (lexed, used) = (parser.lex.pos.saturating_sub(start), parser.used);
                self.work(lexed)?;
                Ok((Indirect { value: value?, stream: None }, used))
            }
        }
    }

    /// Object `id`, which must be a dictionary (a stream's counts as one).
    pub(crate) fn dict(&mut self, id: ObjectId) -> Res<Dict> {
        self.object(id)?
            .0
            .value
            .into_dict()
            .ok_or_else(|| broken(format!("object {} {} is not a dictionary", id.0, id.1)))
    }

    /// What a reference points to (through chains of references), cached; `None` for
    /// an object that is not a reference.
    pub(crate) fn deref(&mut self, obj: &Object) -> Res<Option<Rc<Object>>> {
        let &Object::Ref(mut id) = obj else { return Ok(None) };
        for _ in 0..MAX_HOPS {
            let value = match self.values.get(&id) {
                Some(v) => v,
                None => {
                    let (indirect, used) = self.object(id)?;
                    self.values.insert(id, indirect.value, used + OBJECT_COST, &mut self.budget)?
                }
            };
            match &*value {
                Object::Ref(next) => id = *next,
                _ => return Ok(Some(value)),
            }
        }
        Err(broken("a chain of references does not end"))
    }

    /// A stream's `/Length` when it is direct or in a top-level object; `None` sends the
    /// reader looking for `endstream`. (A length inside an object stream could be in the
    /// very stream being read.)
    fn length(&mut self, dict: &Dict) -> Res<Option<i64>> {
        match dict.get(b"Length") {
            Some(Object::Int(n)) => Ok(Some(*n)),
            Some(Object::Ref(id)) => match self.xref.lookup(&mut self.file, id.0)? {
                Some(Entry::At { .. }) => match self.object(*id) {
                    Ok((Indirect { value: Object::Int(n), .. }, _)) => Ok(Some(n)),
                    Err(Failure::Final(e)) => Err(Failure::Final(e)),
                    _ => Ok(None),
                },
                _ => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// Object stream `num`, decoded on first use.
    pub(crate) fn objstm(&mut self, num: u32) -> Res<Rc<ObjStm>> {
        if let Some(stm) = self.objstms.get(&num) {
            return Ok(stm);
        }
        let missing = |what: &str| broken(format!("object stream {num} {what}"));
        let generation = match self.xref.lookup(&mut self.file, num)? {
            Some(Entry::At { generation, .. }) => generation,
            _ => return Err(missing("is not a top-level object")),
        };
        let id = (num, generation);
        let (Indirect { value, stream }, _) = self.object(id)?;
        let (Some(dict), Some(data_at)) = (value.into_dict(), stream) else {
            return Err(missing("is not a stream"));
        };
        let length = self.length(&dict)?;
        if self.inflated >= self.max_inflated {
            return Err(self.inflated_too_much());
        }
        let cap = self.budget.stream_cap();
        let raw = stream_bytes(&mut self.file, data_at, length, cap)?;
        let raw = self.decrypt(id, &dict, raw)?;
        let data = filter::decode(raw, &dict, cap)?;
        self.inflated += data.len() as u64;
        if self.inflated > self.max_inflated {
            return Err(self.inflated_too_much());
        }
        let first = match dict.int(b"First") {
            Some(f) if f >= 0 && (f as u64) <= data.len() as u64 => f as u64,
            _ => return Err(missing("has no valid /First")),
        };
        let declared =
            dict.int(b"N").and_then(|n| u64::try_from(n).ok()).ok_or_else(|| missing("has no /N"))?;
        // As many pairs as the header holds, never as many as /N claims.
        let mut pairs = Vec::new();
        {
            let mut header: &[u8] = &data[..first as usize];
            let mut lex = Lexer::new(&mut header, 0);
            while (pairs.len() as u64) < declared {
                match (lex.next(false)?, lex.next(false)?) {
                    (Token::Int(n), Token::Int(off)) => match (u32::try_from(n), u32::try_from(off)) {
                        (Ok(n), Ok(off)) => pairs.push((n, off)),
                        _ => return Err(missing("has a header pair out of range")),
                    },
                    (Token::Eof, _) => break,
                    _ => return Err(missing("has a malformed header")),
                }
            }
        }
        let size = data.len() as u64 + pairs.len() as u64 * 8;
        self.objstms.insert(num, ObjStm { data, first, pairs }, size, &mut self.budget)
    }

    fn inflated_too_much(&self) -> Failure {
        Failure::Final(ProbeError::TooLarge {
            what: "bytes decoded from PDF object streams".into(),
            limit: self.max_inflated,
        })
    }

    /// Decrypts a stream's data when the file is encrypted (lopdf's security handler,
    /// on one stream whose size the caller bounded).
    fn decrypt(&self, id: ObjectId, dict: &Dict, raw: Vec<u8>) -> Res<Vec<u8>> {
        let Some(state) = &self.crypt else { return Ok(raw) };
        let mut d = lopdf::Dictionary::new();
        for key in [&b"Type"[..], b"Filter", b"DecodeParms"] {
            if let Some(v) = dict.get(key) {
                d.set(key, to_lopdf(v, 0));
            }
        }
        let mut obj = lopdf::Object::Stream(lopdf::Stream::new(d, raw));
        lopdf::encryption::decrypt_object(state, id, &mut obj)
            .map_err(|e| broken(format!("object stream {} does not decrypt: {e}", id.0)))?;
        match obj {
            lopdf::Object::Stream(s) => Ok(s.content),
            _ => Err(broken("decryption changed a stream into something else")),
        }
    }

    /// Works out the decryption key from the `/Encrypt` dictionary with the empty user
    /// password, as readers do when opening a file; any other password means the file
    /// is `Encrypted` to us.
    fn init_crypt(&mut self) -> Res<()> {
        self.crypt = None;
        let Some(encrypt) = self.trailer.encrypt.take() else { return Ok(()) };
        let result = self.crypt_state(&encrypt);
        self.trailer.encrypt = Some(encrypt);
        self.crypt = Some(result?);
        Ok(())
    }

    fn crypt_state(&mut self, encrypt: &Object) -> Res<lopdf::EncryptionState> {
        let held;
        let (id, dict) = match encrypt {
            Object::Ref(id) => {
                held = self.dict(*id)?;
                (*id, &held)
            }
            Object::Dict(d) => ((0, 0), d),
            _ => return Err(broken("/Encrypt is not a dictionary")),
        };
        let mut converted = lopdf::Dictionary::new();
        for (key, value) in &dict.0 {
            let value = match self.deref(value)? {
                Some(v) => to_lopdf(&v, 0),
                None => to_lopdf(value, 0),
            };
            converted.set(key.to_vec(), value);
        }
        let mut doc = lopdf::Document::new();
        doc.objects.insert(id, lopdf::Object::Dictionary(converted));
        doc.trailer.set("Encrypt", lopdf::Object::Reference(id));
        if let Some(file_id) = self.trailer.id.take() {
            let value = match self.deref(&file_id) {
                Ok(Some(v)) => to_lopdf(&v, 0),
                _ => to_lopdf(&file_id, 0),
            };
            doc.trailer.set("ID", value);
            self.trailer.id = Some(file_id);
        }
        lopdf::EncryptionState::decode(&doc, "")
            .map_err(|_| Failure::Final(ProbeError::Encrypted { format: FORMAT }))
    }
}

/// Our object as lopdf's, for its security handler. The encryption dictionary nests
/// three levels (`/CF` → filter → entries): deeper parts are dropped, which bounds the
/// recursion here whatever the nesting limit.
fn to_lopdf(obj: &Object, depth: u32) -> lopdf::Object {
    if depth > 8 {
        return lopdf::Object::Null;
    }
    match obj {
        Object::Null => lopdf::Object::Null,
        Object::Bool(b) => lopdf::Object::Boolean(*b),
        Object::Int(i) => lopdf::Object::Integer(*i),
        Object::Real(r) => lopdf::Object::Real(*r as f32),
        Object::Name(n) => lopdf::Object::Name(n.to_vec()),
        Object::Str(s) => lopdf::Object::String(s.to_vec(), lopdf::StringFormat::Literal),
        Object::Array(items) => lopdf::Object::Array(items.iter().map(|i| to_lopdf(i, depth + 1)).collect()),
        Object::Dict(d) => {
            let mut out = lopdf::Dictionary::new();
            for (k, v) in &d.0 {
                out.set(k.to_vec(), to_lopdf(v, depth + 1));
            }
            lopdf::Object::Dictionary(out)
        }
        Object::Ref(id) => lopdf::Object::Reference(*id),
    }
}

/// A stream's raw data from `pos`: `length` bytes when `endstream` follows them, else
/// up to the next `endstream` (lengths are often wrong in damaged files). Never more
/// than `cap` bytes (else `TooLarge`).
pub(crate) fn stream_bytes(file: &mut FileBytes, pos: u64, length: Option<i64>, cap: usize) -> Res<Vec<u8>> {
    let size = file.size();
    let too_large =
        || Failure::Final(ProbeError::TooLarge { what: "a PDF stream".into(), limit: cap as u64 });
    if let Some(len) = length.and_then(|l| u64::try_from(l).ok())
        && pos.saturating_add(len) <= size
    {
        let after = file.read_at(pos + len, 32)?;
        let start = after.iter().position(|b| !b" \t\r\n\x0c\0".contains(b)).unwrap_or(after.len());
        if after[start..].starts_with(b"endstream") {
            if len > cap as u64 {
                return Err(too_large());
            }
            return Ok(file.read_at(pos, len as usize)?);
        }
    }
    let finder = memmem::Finder::new(b"endstream");
    let end_of_search = size.min(pos.saturating_add(cap as u64 + 16));
    let mut at = pos;
    while at < end_of_search {
        let chunk = file.chunk(at, (1 << 20).min(end_of_search - at + 9))?;
        if chunk.is_empty() {
            break;
        }
        if let Some(i) = finder.find(chunk) {
            let mut end = at + i as u64;
            // The end of line before `endstream` is not data.
            let tail = file.read_at(end.saturating_sub(2).max(pos), 2)?;
            if tail.ends_with(b"\r\n") {
                end -= 2;
            } else if tail.ends_with(b"\n") || tail.ends_with(b"\r") {
                end -= 1;
            }
            let len = end.saturating_sub(pos);
            if len > cap as u64 {
                return Err(too_large());
            }
            return Ok(file.read_at(pos, len as usize)?);
        }
        at += (chunk.len() as u64).saturating_sub(8).max(1);
    }
    if end_of_search < size { Err(too_large()) } else { Err(broken("a stream has no endstream")) }
}
