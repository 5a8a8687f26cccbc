//! numpy `.npy` files: format versions 1.0, 2.0 and 3.0, plain and structured dtypes.
//!
//! Why our own reader: cryoSPARC `.cs` files are `.npy` files holding a *structured*
//! array whose field names contain `/` (`blob/path`, `alignments3D/pose`), and neither
//! `ndarray-npy` (no structured dtypes) nor `npyz` (derive cannot map those names) fits.
//! The format is small enough to parse directly.
//!
//! Layout of a file (see numpy's `numpy/lib/format.py`):
//! - magic `\x93NUMPY`, then the major and minor version bytes;
//! - header length: little-endian `u16` (version 1) or `u32` (versions 2 and 3);
//! - the header: a Python dict literal
//!   `{'descr': ..., 'fortran_order': False, 'shape': (n,), }` padded with spaces and a
//!   newline (Latin-1 text for versions 1 and 2, UTF-8 for version 3);
//! - the raw element data, `product(shape) * itemsize` bytes.
//!
//! `descr` is either a type string (`'<f4'`, `'|S32'`, `'>i8'`, `'<U10'`, `'|V4'`) or a
//! list of `(name, type)` / `(name, type, shape)` tuples for a structured array. Fields
//! are packed in list order, so each field's byte offset is the running sum of the sizes
//! before it; numpy writes explicit `('', '|V4')` entries for padding, which we skip over
//! but do not list as fields.
//!
//! Conventions:
//! - Every accessor returns elements in C (row-major) order, whatever `fortran_order`
//!   says; a sub-array field (`('pose', '<f4', (3,))`) contributes its `width` elements
//!   per array element, consecutively.
//! - Object arrays (`'|O'`, pickled Python objects) and nested structured fields are
//!   rejected with an error: `.cs` files never use them and we do not run pickle code.
//! - The parser never panics and never allocates more than the input's size justifies:
//!   the header must fit in the input, and the data length must equal
//!   `product(shape) * itemsize` exactly (computed with overflow checks). It is fuzzed
//!   (`fuzz/fuzz_targets/cs.rs`).

use std::collections::HashSet;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::atomic::read_bytes;

/// The six magic bytes every `.npy` file starts with.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// How deep Python literals in a header may nest. numpy's own headers need 4 levels
/// (dict > list > tuple > tuple); the limit stops a hostile header from overflowing
/// the stack of the recursive literal parser.
const MAX_LITERAL_DEPTH: usize = 32;

fn bad(msg: impl Into<String>) -> Error {
    Error::malformed("npy", msg)
}

// ---------------------------------------------------------------------------------------
// dtypes
// ---------------------------------------------------------------------------------------

/// Byte order of a scalar type. `|` (not applicable) is used by numpy for one-byte and
/// byte-string types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    Little,
    Big,
    NotApplicable,
}

/// The kind of a scalar type (the letter in numpy's type string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `b`: numpy bool, one byte 0 or 1.
    Bool,
    /// `i`: signed integer.
    Int,
    /// `u`: unsigned integer.
    UInt,
    /// `f`: IEEE float (2, 4 or 8 bytes; 12/16 are x87 long doubles, layout only).
    Float,
    /// `c`: complex (two floats).
    Complex,
    /// `S` (or the old `a`): NUL-padded bytes.
    Bytes,
    /// `U`: NUL-padded UTF-32 code points.
    Unicode,
    /// `V`: raw bytes (padding or opaque data).
    Void,
    /// `M`: datetime64 (layout only).
    DateTime,
    /// `m`: timedelta64 (layout only).
    TimeDelta,
}

/// One scalar type, as parsed from a numpy type string such as `'<f4'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalarType {
    pub order: ByteOrder,
    pub kind: Kind,
    /// Bytes per element (for `U` types: 4 × number of characters).
    pub size: usize,
    /// The type string as written in the file, for messages.
    pub text: String,
}

impl ScalarType {
    /// Parse a numpy type string (`'<f4'`, `'|S61'`, `'>U10'`, `'<M8[ns]'`).
    pub fn parse(text: &str) -> Result<Self> {
        let mut chars = text.chars().peekable();
        let order = match chars.peek() {
            Some('<') => {
                chars.next();
                ByteOrder::Little
            }
            Some('>') => {
                chars.next();
                ByteOrder::Big
            }
            Some('|') => {
                chars.next();
                ByteOrder::NotApplicable
            }
            Some('=') => {
                chars.next();
                native_order()
            }
            _ => native_order(),
        };
        let kind_char = chars
            .next()
            .ok_or_else(|| bad(format!("empty type string {text:?}")))?;
        let rest: String = chars.collect();
        let (digits, unit) = match rest.find('[') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest.as_str(), ""),
        };
        let count: Option<usize> = if digits.is_empty() {
            None
        } else {
            Some(
                digits
                    .parse::<usize>()
                    .map_err(|_| bad(format!("type string {text:?}: bad size {digits:?}")))?,
            )
        };
        let kind = match kind_char {
            'b' | '?' => Kind::Bool,
            'i' => Kind::Int,
            'u' => Kind::UInt,
            'f' => Kind::Float,
            'c' => Kind::Complex,
            'S' | 'a' => Kind::Bytes,
            'U' => Kind::Unicode,
            'V' => Kind::Void,
            'M' => Kind::DateTime,
            'm' => Kind::TimeDelta,
            'O' => {
                return Err(bad(format!(
                    "object dtype {text:?} holds pickled Python objects; not supported"
                )))
            }
            other => {
                return Err(bad(format!(
                    "unsupported type string {text:?} (kind {other:?})"
                )))
            }
        };
        if !unit.is_empty() && !matches!(kind, Kind::DateTime | Kind::TimeDelta) {
            return Err(bad(format!("unsupported type string {text:?}")));
        }
        let size = match kind {
            Kind::Bool => match count {
                None | Some(1) => 1,
                Some(_) => return Err(bad(format!("bool type {text:?} must have size 1"))),
            },
            Kind::Int | Kind::UInt => match count {
                Some(n @ (1 | 2 | 4 | 8)) => n,
                _ => {
                    return Err(bad(format!(
                        "integer type {text:?}: size must be 1, 2, 4 or 8"
                    )))
                }
            },
            Kind::Float => match count {
                Some(n @ (2 | 4 | 8 | 12 | 16)) => n,
                _ => return Err(bad(format!("float type {text:?}: size must be 2, 4 or 8"))),
            },
            Kind::Complex => match count {
                Some(n @ (8 | 16 | 24 | 32)) => n,
                _ => return Err(bad(format!("complex type {text:?}: bad size"))),
            },
            Kind::DateTime | Kind::TimeDelta => match count {
                Some(8) => 8,
                _ => return Err(bad(format!("datetime type {text:?}: size must be 8"))),
            },
            Kind::Bytes | Kind::Void => count.unwrap_or(0),
            Kind::Unicode => count
                .unwrap_or(0)
                .checked_mul(4)
                .ok_or_else(|| bad(format!("type string {text:?}: size overflows")))?,
        };
        Ok(ScalarType {
            order,
            kind,
            size,
            text: text.to_string(),
        })
    }

    fn is_little(&self) -> bool {
        // A one-byte type reads the same either way; `|` multi-byte types (S, V) are not
        // decoded as numbers.
        self.order != ByteOrder::Big
    }
}

fn native_order() -> ByteOrder {
    if cfg!(target_endian = "big") {
        ByteOrder::Big
    } else {
        ByteOrder::Little
    }
}

/// A named field of a structured array (or the one unnamed field of a plain array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field name (`""` for a plain array's only field).
    pub name: String,
    pub ty: ScalarType,
    /// Sub-array shape (`[]` for a scalar field, `[3]` for `('pose', '<f4', (3,))`).
    pub shape: Vec<usize>,
    /// Elements per array element: the product of `shape` (1 for a scalar field).
    pub width: usize,
    /// Byte offset inside one item.
    pub offset: usize,
}

/// The dtype of an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DType {
    /// A plain scalar type (`'<f4'`).
    Plain(ScalarType),
    /// A structured type: named fields (padding left out), and the total item size.
    Structured { fields: Vec<Field>, itemsize: usize },
}

// ---------------------------------------------------------------------------------------
// The array
// ---------------------------------------------------------------------------------------

/// A parsed `.npy` file: the header and the owned raw data bytes.
///
/// Accessors decode on demand; nothing is converted up front, so opening a large `.cs`
/// file costs one read.
#[derive(Debug, Clone)]
pub struct NpyArray {
    version: (u8, u8),
    dtype: DType,
    fortran_order: bool,
    shape: Vec<usize>,
    /// Number of array elements: the product of `shape` (1 for a 0-d array).
    n_elems: usize,
    itemsize: usize,
    /// The whole input; the data are `buf[data_offset..]`.
    buf: Vec<u8>,
    data_offset: usize,
    /// For plain arrays: the single unnamed field, so plain and structured share code.
    plain_field: Option<Field>,
    /// Fortran-order element strides (prefix products of the shape); empty when the
    /// storage order is already C order (C-order data, or fewer than two axes).
    f_strides: Vec<usize>,
}

impl NpyArray {
    /// Parse a whole `.npy` file held in memory (the bytes are copied).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_vec(bytes.to_vec())
    }

    /// Parse a whole `.npy` file, taking ownership of the bytes (no copy).
    pub fn from_vec(buf: Vec<u8>) -> Result<Self> {
        let header = parse_preamble(&buf)?;
        let (dict_text, data_offset, version) = (header.text, header.data_offset, header.version);
        let lit = LitParser::new(&dict_text).parse_document()?;
        let Lit::Dict(items) = lit else {
            return Err(bad(format!(
                "header is not a Python dict: {}",
                preview(&dict_text)
            )));
        };
        let mut descr = None;
        let mut fortran = None;
        let mut shape_lit = None;
        for (k, v) in items {
            match k {
                Lit::Str(s) if s == "descr" => descr = Some(v),
                Lit::Str(s) if s == "fortran_order" => fortran = Some(v),
                Lit::Str(s) if s == "shape" => shape_lit = Some(v),
                // numpy itself rejects extra keys; ignoring them costs nothing.
                _ => {}
            }
        }
        let missing = |key: &str| {
            bad(format!(
                "header has no '{key}' key: {}",
                preview(&dict_text)
            ))
        };
        let descr = descr.ok_or_else(|| missing("descr"))?;
        let fortran_order = match fortran.ok_or_else(|| missing("fortran_order"))? {
            Lit::Bool(b) => b,
            other => {
                return Err(bad(format!(
                    "'fortran_order' must be True or False, found {}",
                    other.describe()
                )))
            }
        };
        let shape = lit_shape(&shape_lit.ok_or_else(|| missing("shape"))?, "'shape'")?;

        let (dtype, itemsize, plain_field) = match descr {
            Lit::Str(s) => {
                let ty = ScalarType::parse(&s)?;
                let size = ty.size;
                let field = Field {
                    name: String::new(),
                    ty: ty.clone(),
                    shape: Vec::new(),
                    width: 1,
                    offset: 0,
                };
                (DType::Plain(ty), size, Some(field))
            }
            Lit::List(entries) => {
                let (fields, itemsize) = parse_fields(entries)?;
                (DType::Structured { fields, itemsize }, itemsize, None)
            }
            other => {
                return Err(bad(format!(
                    "'descr' must be a type string or a list of fields, found {}",
                    other.describe()
                )))
            }
        };

        let n_elems = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("shape {shape:?} overflows the element count")))?;
        let expected = n_elems.checked_mul(itemsize).ok_or_else(|| {
            bad(format!(
                "shape {shape:?} with {itemsize}-byte items overflows the data size"
            ))
        })?;
        let actual = buf.len().saturating_sub(data_offset);
        if expected != actual {
            return Err(bad(format!(
                "data length mismatch: shape {shape:?} × {itemsize} bytes per item = {expected} bytes, \
                 but the file has {actual} bytes of data{}",
                if actual < expected { " (truncated?)" } else { "" }
            )));
        }
        if itemsize == 0 && n_elems > 0 {
            // A zero-size dtype would let a tiny file claim 2^62 elements; accessors
            // would then allocate accordingly.
            return Err(bad(format!(
                "zero-size dtype with {n_elems} elements is not supported"
            )));
        }
        let f_strides = if fortran_order && shape.len() > 1 {
            // Prefix products are bounded by n_elems, which did not overflow.
            let mut acc = 1usize;
            shape
                .iter()
                .map(|&d| {
                    let s = acc;
                    acc = acc.saturating_mul(d);
                    s
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(NpyArray {
            f_strides,
            version,
            dtype,
            fortran_order,
            shape,
            n_elems,
            itemsize,
            buf,
            data_offset,
            plain_field,
        })
    }

    /// Read and parse a `.npy` file; errors name the file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_bytes(path)?;
        Self::from_vec(bytes).map_err(|e| e.in_file(path))
    }

    /// Format version `(major, minor)`.
    pub fn version(&self) -> (u8, u8) {
        self.version
    }

    /// The array shape (empty for a 0-d array).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of rows: the first dimension, or 1 for a 0-d array.
    pub fn n_rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Number of array elements (product of the shape).
    pub fn n_elems(&self) -> usize {
        self.n_elems
    }

    /// Bytes per array element.
    pub fn itemsize(&self) -> usize {
        self.itemsize
    }

    /// Whether the data are stored in Fortran (column-major) order.
    pub fn fortran_order(&self) -> bool {
        self.fortran_order
    }

    /// The dtype.
    pub fn dtype(&self) -> &DType {
        &self.dtype
    }

    /// Whether this is a structured (record) array.
    pub fn is_structured(&self) -> bool {
        matches!(self.dtype, DType::Structured { .. })
    }

    /// The raw data bytes, in storage order.
    pub fn data(&self) -> &[u8] {
        self.buf.get(self.data_offset..).unwrap_or(&[])
    }

    /// The fields of a structured array, in order (padding left out); empty for plain.
    pub fn fields(&self) -> &[Field] {
        match &self.dtype {
            DType::Structured { fields, .. } => fields,
            DType::Plain(_) => &[],
        }
    }

    /// Field names in file order; empty for plain dtypes.
    pub fn field_names(&self) -> Vec<&str> {
        self.fields().iter().map(|f| f.name.as_str()).collect()
    }

    /// Whether a structured array has this field.
    pub fn has_field(&self, name: &str) -> bool {
        self.field(name).is_some()
    }

    /// The field called `name`, if present.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields().iter().find(|f| f.name == name)
    }

    /// Elements per array element of a field (1 for a scalar field, 3 for
    /// `('pose', '<f4', (3,))`); `None` if absent.
    pub fn field_width(&self, name: &str) -> Option<usize> {
        self.field(name).map(|f| f.width)
    }

    fn require_field(&self, name: &str) -> Result<&Field> {
        self.field(name).ok_or_else(|| {
            if self.is_structured() {
                bad(format!(
                    "no field named {name:?}; the fields are: {}",
                    self.field_names().join(", ")
                ))
            } else {
                bad(format!(
                    "no field named {name:?}: this is a plain {} array, not a structured one",
                    self.dtype_text()
                ))
            }
        })
    }

    fn dtype_text(&self) -> String {
        match &self.dtype {
            DType::Plain(t) => t.text.clone(),
            DType::Structured { fields, .. } => format!("structured ({} fields)", fields.len()),
        }
    }

    /// Storage position (in items) of the element with C-order linear index `i`.
    fn storage_index(&self, i: usize) -> usize {
        if self.f_strides.is_empty() {
            return i;
        }
        // Decompose the C index (last axis fastest) and recompose it with the Fortran
        // strides (first axis fastest). No overflow: every partial sum is < n_elems.
        let mut rem = i;
        let mut f_index = 0usize;
        for (&d, &stride) in self.shape.iter().zip(&self.f_strides).rev() {
            if d == 0 {
                return i;
            }
            f_index += (rem % d) * stride;
            rem /= d;
        }
        f_index
    }

    /// The bytes of element `k` (0..width) of `field` in the array element with C index `i`.
    fn elem_bytes(&self, field: &Field, i: usize, k: usize) -> Result<&[u8]> {
        let size = field.ty.size;
        let start = self
            .storage_index(i)
            .checked_mul(self.itemsize)
            .and_then(|b| b.checked_add(field.offset))
            .and_then(|b| b.checked_add(k.checked_mul(size)?))
            .and_then(|b| b.checked_add(self.data_offset));
        start
            .and_then(|s| self.buf.get(s..s.checked_add(size)?))
            .ok_or_else(|| {
                bad(format!(
                    "field {:?}: element {i} lies outside the data",
                    field.name
                ))
            })
    }

    fn decode_numeric<T>(
        &self,
        field: &Field,
        what: &str,
        mut conv: impl FnMut(&ScalarType, &[u8]) -> Result<T>,
    ) -> Result<Vec<T>> {
        let total = self
            .n_elems
            .checked_mul(field.width)
            .ok_or_else(|| bad(format!("field {:?} is too large", field.name)))?;
        // Bounded by the data length: every element occupies at least one byte unless
        // the field has zero width, in which case `total` is 0.
        let mut out = Vec::with_capacity(total.min(self.data().len()));
        for i in 0..self.n_elems {
            for k in 0..field.width {
                let b = self.elem_bytes(field, i, k)?;
                out.push(conv(&field.ty, b).map_err(|e| match e {
                    Error::Malformed { msg, .. } => bad(format!(
                        "field {:?} (dtype {}): {msg}; cannot read it as {what}",
                        field.name, field.ty.text
                    )),
                    other => other,
                })?);
            }
        }
        Ok(out)
    }

    /// A numeric field as f64, C order, `n_elems × width` values (for a 1-D structured
    /// array: `n_rows × width`, row-major). Accepts bool, any int and float (2/4/8 byte)
    /// type in either byte order. `u8`/`i8` values above 2^53 lose precision.
    pub fn field_f64(&self, name: &str) -> Result<Vec<f64>> {
        let field = self.require_field(name)?;
        self.decode_numeric(field, "numbers", to_f64)
    }

    /// An integer (or bool) field as u64, C order; errors on negative values and on
    /// float fields, so indices are never silently rounded.
    pub fn field_u64(&self, name: &str) -> Result<Vec<u64>> {
        let field = self.require_field(name)?;
        self.decode_numeric(field, "unsigned integers", |ty, b| match to_i128(ty, b)? {
            v if v >= 0 && v <= u64::MAX as i128 => Ok(v as u64),
            v => Err(bad(format!("value {v} is negative"))),
        })
    }

    /// An integer (or bool) field as i64, C order; errors on float fields and on `u8`
    /// values above `i64::MAX`.
    pub fn field_i64(&self, name: &str) -> Result<Vec<i64>> {
        let field = self.require_field(name)?;
        self.decode_numeric(field, "signed integers", |ty, b| {
            let v = to_i128(ty, b)?;
            i64::try_from(v).map_err(|_| bad(format!("value {v} does not fit in i64")))
        })
    }

    /// A string field (`|S` bytes or `U` UTF-32) as Strings, C order, `n_elems × width`
    /// values. Trailing NULs are stripped as numpy does; `S` bytes are decoded as UTF-8
    /// (invalid sequences become U+FFFD), invalid `U` code points become U+FFFD.
    pub fn field_bytes_str(&self, name: &str) -> Result<Vec<String>> {
        let field = self.require_field(name)?;
        self.strings_of(field)
    }

    fn strings_of(&self, field: &Field) -> Result<Vec<String>> {
        if !matches!(field.ty.kind, Kind::Bytes | Kind::Unicode) {
            return Err(bad(format!(
                "field {:?} has dtype {}, not a string type (|S or <U)",
                field.name, field.ty.text
            )));
        }
        if field.ty.size == 0 && field.width > 0 && self.n_elems > 0 {
            return Err(bad(format!(
                "field {:?} has zero-length strings ({}); not supported",
                field.name, field.ty.text
            )));
        }
        self.decode_numeric(field, "strings", |ty, b| Ok(decode_string(ty, b)))
    }

    /// The whole array as f64 in C order (Fortran-order data are transposed). Plain
    /// numeric dtypes only; for structured arrays use [`NpyArray::field_f64`].
    pub fn to_f64(&self) -> Result<Vec<f64>> {
        match &self.plain_field {
            Some(f) => self.decode_numeric(f, "numbers", to_f64),
            None => Err(bad(format!(
                "to_f64 needs a plain numeric array, this one is structured with fields: {}",
                self.field_names().join(", ")
            ))),
        }
    }

    /// The whole array as Strings in C order: plain `|S` / `<U` arrays only.
    pub fn to_strings(&self) -> Result<Vec<String>> {
        match &self.plain_field {
            Some(f) => self.strings_of(f),
            None => Err(bad(
                "to_strings needs a plain string array, this one is structured",
            )),
        }
    }
}

fn decode_string(ty: &ScalarType, b: &[u8]) -> String {
    match ty.kind {
        Kind::Unicode => {
            let mut s = String::with_capacity(b.len() / 4);
            for c in b.chunks_exact(4) {
                let Ok(arr) = <[u8; 4]>::try_from(c) else {
                    continue;
                };
                let u = if ty.order == ByteOrder::Big {
                    u32::from_be_bytes(arr)
                } else {
                    u32::from_le_bytes(arr)
                };
                s.push(char::from_u32(u).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            s.trim_end_matches('\0').to_string()
        }
        _ => {
            let end = b.iter().rposition(|&x| x != 0).map_or(0, |p| p + 1);
            String::from_utf8_lossy(b.get(..end).unwrap_or(&[])).into_owned()
        }
    }
}

fn fixed<const N: usize>(b: &[u8], little: bool) -> Result<[u8; N]> {
    let mut a: [u8; N] = b
        .get(..N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad("short element"))?;
    if little != cfg!(target_endian = "little") {
        a.reverse();
    }
    Ok(a)
}

/// Native-endian array after applying the element's byte order.
fn to_f64(ty: &ScalarType, b: &[u8]) -> Result<f64> {
    let le = ty.is_little();
    Ok(match (ty.kind, ty.size) {
        (Kind::Float, 2) => half::f16::from_bits(u16::from_ne_bytes(fixed(b, le)?)).to_f64(),
        (Kind::Float, 4) => f32::from_ne_bytes(fixed(b, le)?) as f64,
        (Kind::Float, 8) => f64::from_ne_bytes(fixed(b, le)?),
        (Kind::Bool | Kind::Int | Kind::UInt, _) => to_i128(ty, b)? as f64,
        _ => return Err(bad("not a real numeric type")),
    })
}

fn to_i128(ty: &ScalarType, b: &[u8]) -> Result<i128> {
    let le = ty.is_little();
    Ok(match (ty.kind, ty.size) {
        (Kind::Bool, 1) | (Kind::UInt, 1) => {
            *b.first().ok_or_else(|| bad("short element"))? as i128
        }
        (Kind::Int, 1) => *b.first().ok_or_else(|| bad("short element"))? as i8 as i128,
        (Kind::Int, 2) => i16::from_ne_bytes(fixed(b, le)?) as i128,
        (Kind::Int, 4) => i32::from_ne_bytes(fixed(b, le)?) as i128,
        (Kind::Int, 8) => i64::from_ne_bytes(fixed(b, le)?) as i128,
        (Kind::UInt, 2) => u16::from_ne_bytes(fixed(b, le)?) as i128,
        (Kind::UInt, 4) => u32::from_ne_bytes(fixed(b, le)?) as i128,
        (Kind::UInt, 8) => u64::from_ne_bytes(fixed(b, le)?) as i128,
        _ => return Err(bad("not an integer type")),
    })
}

// ---------------------------------------------------------------------------------------
// Header: preamble, fields
// ---------------------------------------------------------------------------------------

struct Preamble {
    text: String,
    data_offset: usize,
    version: (u8, u8),
}

fn parse_preamble(buf: &[u8]) -> Result<Preamble> {
    let prefix = buf.get(..buf.len().min(6)).unwrap_or(&[]);
    if !MAGIC.starts_with(prefix) {
        return Err(bad(format!(
            "not a .npy file: it starts with {:?}, not \\x93NUMPY",
            String::from_utf8_lossy(prefix)
        )));
    }
    let Some(head) = buf.get(..10).and_then(|h| <[u8; 10]>::try_from(h).ok()) else {
        return Err(bad(format!(
            "truncated: {} bytes, a .npy file has at least 10",
            buf.len()
        )));
    };
    let (major, minor) = (head[6], head[7]);
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([head[8], head[9]]) as usize, 10usize),
        2 | 3 => {
            let b: [u8; 4] = buf
                .get(8..12)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad("truncated: the version 2/3 header length is missing"))?;
            (u32::from_le_bytes(b) as usize, 12usize)
        }
        _ => {
            return Err(bad(format!(
                "unsupported .npy format version {major}.{minor} (1.0, 2.0 and 3.0 are known)"
            )))
        }
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| {
            bad(format!(
                "truncated: the header claims {header_len} bytes but only {} follow",
                buf.len().saturating_sub(start)
            ))
        })?;
    let raw = buf.get(start..end).unwrap_or(&[]);
    let text = if major == 3 {
        std::str::from_utf8(raw)
            .map_err(|e| bad(format!("version 3 header is not UTF-8: {e}")))?
            .to_string()
    } else {
        // Versions 1 and 2 store Latin-1: every byte is one code point.
        raw.iter().map(|&b| b as char).collect()
    };
    Ok(Preamble {
        text,
        data_offset: end,
        version: (major, minor),
    })
}

/// Turn the `descr` list of a structured dtype into fields with offsets.
fn parse_fields(entries: Vec<Lit>) -> Result<(Vec<Field>, usize)> {
    let mut fields = Vec::with_capacity(entries.len());
    let mut names = HashSet::new();
    let mut offset = 0usize;
    for (index, entry) in entries.into_iter().enumerate() {
        let parts = match entry {
            Lit::Tuple(p) | Lit::List(p) => p,
            other => {
                return Err(bad(format!(
                "structured descr entry {index} must be a (name, type[, shape]) tuple, found {}",
                other.describe()
            )))
            }
        };
        if !(2..=3).contains(&parts.len()) {
            return Err(bad(format!(
                "structured descr entry {index} has {} items, expected (name, type[, shape])",
                parts.len()
            )));
        }
        let mut it = parts.into_iter();
        let (Some(name_lit), Some(type_lit)) = (it.next(), it.next()) else {
            return Err(bad(format!("structured descr entry {index} is incomplete")));
        };
        let shape_lit = it.next();
        let name = match name_lit {
            Lit::Str(s) => s,
            // A titled field: (title, name).
            Lit::Tuple(t) if t.len() == 2 => match t.into_iter().nth(1) {
                Some(Lit::Str(s)) => s,
                _ => {
                    return Err(bad(format!(
                        "structured descr entry {index}: bad titled name"
                    )))
                }
            },
            other => {
                return Err(bad(format!(
                    "structured descr entry {index}: the name must be a string, found {}",
                    other.describe()
                )))
            }
        };
        let ty = match type_lit {
            Lit::Str(s) => {
                ScalarType::parse(&s).map_err(|e| prefix_err(e, &format!("field {name:?}: ")))?
            }
            Lit::List(_) => {
                return Err(bad(format!(
                    "field {name:?} is itself structured (nested dtype); not supported"
                )))
            }
            other => {
                return Err(bad(format!(
                    "field {name:?}: the type must be a string, found {}",
                    other.describe()
                )))
            }
        };
        let shape = match shape_lit {
            None => Vec::new(),
            Some(s) => lit_shape(&s, &format!("the shape of field {name:?}"))?,
        };
        let width = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(format!("field {name:?}: shape {shape:?} overflows")))?;
        let size = width
            .checked_mul(ty.size)
            .ok_or_else(|| bad(format!("field {name:?}: size overflows")))?;
        let field_offset = offset;
        offset = offset
            .checked_add(size)
            .ok_or_else(|| bad("structured dtype: item size overflows"))?;
        if name.is_empty() && ty.kind == Kind::Void {
            // numpy's padding entry: occupies bytes, is not a field.
            continue;
        }
        // numpy names an unnamed non-padding field f<index>.
        let name = if name.is_empty() {
            format!("f{index}")
        } else {
            name
        };
        if !names.insert(name.clone()) {
            return Err(bad(format!("field name {name:?} appears twice")));
        }
        fields.push(Field {
            name,
            ty,
            shape,
            width,
            offset: field_offset,
        });
    }
    Ok((fields, offset))
}

fn prefix_err(e: Error, prefix: &str) -> Error {
    match e {
        Error::Malformed { format, msg } => Error::malformed(format, format!("{prefix}{msg}")),
        other => other,
    }
}

fn lit_shape(lit: &Lit, what: &str) -> Result<Vec<usize>> {
    let dim = |d: &Lit| match d {
        Lit::Int(n) => {
            usize::try_from(*n).map_err(|_| bad(format!("{what} has an impossible dimension {n}")))
        }
        other => Err(bad(format!(
            "{what} must contain integers, found {}",
            other.describe()
        ))),
    };
    match lit {
        Lit::Tuple(d) | Lit::List(d) => d.iter().map(dim).collect(),
        // A bare integer is accepted as a 1-D shape, as numpy accepts `shape=3`.
        Lit::Int(_) => Ok(vec![dim(lit)?]),
        other => Err(bad(format!(
            "{what} must be a tuple of integers, found {}",
            other.describe()
        ))),
    }
}

fn preview(text: &str) -> String {
    let t: String = text.trim().chars().take(80).collect();
    if text.trim().chars().count() > 80 {
        format!("{t:?}...")
    } else {
        format!("{t:?}")
    }
}

// ---------------------------------------------------------------------------------------
// A tiny parser for the Python literals numpy writes in headers
// ---------------------------------------------------------------------------------------

/// A Python literal: the subset `repr` produces in `.npy` headers.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

impl Lit {
    fn describe(&self) -> String {
        match self {
            Lit::Str(s) => format!("the string {s:?}"),
            Lit::Int(n) => format!("the integer {n}"),
            Lit::Bool(b) => if *b { "True" } else { "False" }.to_string(),
            Lit::None => "None".to_string(),
            Lit::Tuple(_) => "a tuple".to_string(),
            Lit::List(_) => "a list".to_string(),
            Lit::Dict(_) => "a dict".to_string(),
        }
    }
}

struct LitParser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> LitParser<'a> {
    fn new(s: &'a str) -> Self {
        LitParser { s, pos: 0 }
    }

    fn err(&self, what: &str) -> Error {
        let near: String = self
            .s
            .get(self.pos..)
            .unwrap_or("")
            .chars()
            .take(20)
            .collect();
        bad(format!(
            "header is not a valid Python literal: {what} at character {} (near {near:?})",
            self.pos
        ))
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c == b' ' || c == b'\t' || c == b'\n' || c == b'\r' || c == b'\x0c' {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// The whole header: one literal, then only whitespace (numpy pads with spaces and
    /// ends with a newline).
    fn parse_document(mut self) -> Result<Lit> {
        let v = self.parse_value(0)?;
        self.skip_ws();
        if self.pos != self.s.len() {
            return Err(self.err("unexpected text after the header dict"));
        }
        Ok(v)
    }

    fn parse_value(&mut self, depth: usize) -> Result<Lit> {
        if depth > MAX_LITERAL_DEPTH {
            return Err(self.err("literal nested too deeply"));
        }
        self.skip_ws();
        match self.peek() {
            None => Err(self.err("unexpected end")),
            Some(b'{') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        return Ok(Lit::Dict(items));
                    }
                    let k = self.parse_value(depth + 1)?;
                    self.skip_ws();
                    if self.peek() != Some(b':') {
                        return Err(self.err("expected ':' in dict"));
                    }
                    self.pos += 1;
                    let v = self.parse_value(depth + 1)?;
                    items.push((k, v));
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {}
                        _ => return Err(self.err("expected ',' or '}' in dict")),
                    }
                }
            }
            Some(open @ (b'(' | b'[')) => {
                let close = if open == b'(' { b')' } else { b']' };
                self.pos += 1;
                let mut items = Vec::new();
                let mut saw_comma = false;
                loop {
                    self.skip_ws();
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        break;
                    }
                    items.push(self.parse_value(depth + 1)?);
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => {
                            self.pos += 1;
                            saw_comma = true;
                        }
                        Some(c) if c == close => {}
                        _ => return Err(self.err("expected ',' or a closing bracket")),
                    }
                }
                if open == b'[' {
                    Ok(Lit::List(items))
                } else if items.len() == 1 && !saw_comma {
                    // `(x)` is just a parenthesised value in Python.
                    Ok(items.into_iter().next().unwrap_or(Lit::None))
                } else {
                    Ok(Lit::Tuple(items))
                }
            }
            Some(b'\'' | b'"') => self.parse_string(),
            Some(c) if c == b'-' || c == b'+' || c.is_ascii_digit() => self.parse_int(),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.pos;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
                    self.pos += 1;
                }
                let word = self.s.get(start..self.pos).unwrap_or("");
                match word {
                    "True" => Ok(Lit::Bool(true)),
                    "False" => Ok(Lit::Bool(false)),
                    "None" => Ok(Lit::None),
                    // Python 2 era string prefixes: u'..', b'..'.
                    "u" | "b" | "U" | "B" if matches!(self.peek(), Some(b'\'' | b'"')) => {
                        self.parse_string()
                    }
                    _ => {
                        self.pos = start;
                        Err(self.err("unknown name"))
                    }
                }
            }
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn parse_int(&mut self) -> Result<Lit> {
        let start = self.pos;
        let neg = match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                true
            }
            Some(b'+') => {
                self.pos += 1;
                false
            }
            _ => false,
        };
        let mut v: i128 = 0;
        let mut n_digits = 0;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                v = v
                    .checked_mul(10)
                    .and_then(|v| v.checked_add((c - b'0') as i128))
                    .ok_or_else(|| self.err("integer too large"))?;
                n_digits += 1;
                self.pos += 1;
            } else if c == b'_' && n_digits > 0 {
                self.pos += 1;
            } else {
                break;
            }
        }
        if n_digits == 0 {
            self.pos = start;
            return Err(self.err("expected an integer"));
        }
        // Python 2 long suffix, as in `(3L,)`.
        if matches!(self.peek(), Some(b'L' | b'l')) {
            self.pos += 1;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E' | b'j')) {
            return Err(self.err("only integers are expected in a header"));
        }
        Ok(Lit::Int(if neg { -v } else { v }))
    }

    fn parse_string(&mut self) -> Result<Lit> {
        let Some(q) = self.peek() else {
            return Err(self.err("expected a string"));
        };
        self.pos += 1;
        let mut out = String::new();
        loop {
            // Find the next quote or backslash; both are ASCII, so byte scanning never
            // splits a UTF-8 sequence.
            let rest = self.s.get(self.pos..).unwrap_or("");
            let Some(rel) = rest
                .bytes()
                .position(|c| c == q || c == b'\\' || c == b'\n')
            else {
                return Err(self.err("unterminated string"));
            };
            out.push_str(rest.get(..rel).unwrap_or(""));
            self.pos += rel;
            match self.peek() {
                Some(c) if c == q => {
                    self.pos += 1;
                    return Ok(Lit::Str(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.parse_escape(&mut out)?;
                }
                _ => return Err(self.err("unterminated string")),
            }
        }
    }

    fn parse_escape(&mut self, out: &mut String) -> Result<()> {
        let Some(c) = self.s.get(self.pos..).and_then(|r| r.chars().next()) else {
            return Err(self.err("unterminated escape"));
        };
        self.pos += c.len_utf8();
        let hex = |p: &mut Self, n: usize| -> Result<char> {
            let digits =
                p.s.get(p.pos..p.pos + n)
                    .ok_or_else(|| p.err("short escape"))?;
            let v = u32::from_str_radix(digits, 16).map_err(|_| p.err("bad hex escape"))?;
            p.pos += n;
            char::from_u32(v).ok_or_else(|| p.err("escape is not a character"))
        };
        match c {
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '0' => out.push('\0'),
            'x' => out.push(hex(self, 2)?),
            'u' => out.push(hex(self, 4)?),
            'U' => out.push(hex(self, 8)?),
            '\n' => {}
            other => {
                // Python keeps unknown escapes verbatim.
                out.push('\\');
                out.push(other);
            }
        }
        Ok(())
    }
}

/// Element types [`write`] can store.
pub enum NpyData<'a> {
    /// `<f4`
    F32(&'a [f32]),
    /// `<f8`
    F64(&'a [f64]),
    /// `<c8` (complex64: re, im f32 pairs)
    C64(&'a [num_complex::Complex<f32>]),
    /// `<i8`
    I64(&'a [i64]),
}

/// Write a plain C-order `.npy` file (format 1.0, little endian), atomically; `np.load`
/// reads it back with this shape and dtype.
pub fn write(path: impl AsRef<Path>, shape: &[usize], data: NpyData<'_>) -> Result<()> {
    let path = path.as_ref();
    let (descr, len) = match &data {
        NpyData::F32(v) => ("<f4", v.len()),
        NpyData::F64(v) => ("<f8", v.len()),
        NpyData::C64(v) => ("<c8", v.len()),
        NpyData::I64(v) => ("<i8", v.len()),
    };
    let want: usize = shape.iter().product();
    if want != len {
        return Err(Error::invalid(format!(
            "{}: shape {shape:?} needs {want} values, got {len}",
            path.display()
        )));
    }
    let shape_text = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Pad with spaces so magic + length + header + newline is a multiple of 64 bytes.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + len * 8);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match data {
        NpyData::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::C64(v) => v.iter().for_each(|x| {
            out.extend_from_slice(&x.re.to_le_bytes());
            out.extend_from_slice(&x.im.to_le_bytes());
        }),
        NpyData::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
    super::atomic::write_bytes(path, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&[1, 0]);
        v.extend_from_slice(&(h.len() as u16).to_le_bytes());
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn literal_parser_handles_numpy_headers() {
        let l = LitParser::new("{'descr': [('a', '<f4', (3,)), ('', '|V4')], 'fortran_order': False, 'shape': (2,), }\n")
            .parse_document()
            .unwrap();
        let Lit::Dict(items) = l else { panic!() };
        assert_eq!(items.len(), 3);
        assert_eq!(
            LitParser::new("(3L, 4)").parse_document().unwrap(),
            Lit::Tuple(vec![Lit::Int(3), Lit::Int(4)])
        );
        assert_eq!(
            LitParser::new("()").parse_document().unwrap(),
            Lit::Tuple(vec![])
        );
        assert_eq!(
            LitParser::new(r#"u'a\'b\x41'"#).parse_document().unwrap(),
            Lit::Str("a'bA".into())
        );
        assert!(LitParser::new("'abc").parse_document().is_err());
        assert!(LitParser::new("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]").parse_document().is_err());
    }

    #[test]
    fn plain_and_zero_d() {
        let data: Vec<u8> = [1.5f64].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = NpyArray::from_bytes(&npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (), }",
            &data,
        ))
        .unwrap();
        assert_eq!(a.shape(), &[] as &[usize]);
        assert_eq!(a.n_rows(), 1);
        assert_eq!(a.to_f64().unwrap(), vec![1.5]);
    }

    #[test]
    fn zero_size_dtype_rejected() {
        let e = NpyArray::from_bytes(&npy(
            "{'descr': '|S0', 'fortran_order': False, 'shape': (4611686018427387904,), }",
            &[],
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("zero-size"), "{e}");
    }

    #[test]
    fn scalar_type_parsing() {
        assert_eq!(ScalarType::parse("<U10").unwrap().size, 40);
        assert_eq!(ScalarType::parse("<M8[ns]").unwrap().kind, Kind::DateTime);
        assert!(ScalarType::parse("|O").is_err());
        assert!(ScalarType::parse("<f3").is_err());
        assert!(ScalarType::parse("").is_err());
    }
}

#[cfg(test)]
mod writer_tests {
    use super::*;

    #[test]
    fn written_files_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write(&p, &[2, 3], NpyData::F32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])).unwrap();
        let a = NpyArray::read(&p).unwrap();
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(a.to_f64().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(std::fs::read(&p).unwrap().len() % 64, 24);
        write(&p, &[3], NpyData::I64(&[1, -2, 3])).unwrap();
        assert_eq!(
            NpyArray::read(&p).unwrap().to_f64().unwrap(),
            vec![1.0, -2.0, 3.0]
        );
        assert!(write(&p, &[4], NpyData::F64(&[1.0])).is_err());
    }
}
