//! RELION `.star` files (RELION 3.0, 3.1 with an optics table, 5), read and written.
//!
//! # What is read
//! A file is a sequence of `data_<name>` blocks (the bare `data_` is a valid name).
//! Each block holds **one** table, either
//! - a `loop_` table: column headers `_rlnName` (a trailing `#3` index is ignored),
//!   then one row per line, values separated by whitespace; or
//! - simple `_rlnKey value` items, which become a one-row table (an empty block becomes
//!   a table with no columns and no rows).
//!
//! Values may be quoted, `"a b"` or `'a b'`, and the quotes are removed. As in the STAR
//! grammar, a quote closes a value only when whitespace or the end of the line follows,
//! so `"it's"` is `it's`. A simple item's value may also be on the next line, or be a
//! `;`-delimited multi-line text field. Values are kept as text exactly as written
//! (`[0.068,0.098]` from RELION 5 optics tables stays one string);
//! [`StarTable::column_f64`] converts on demand and names the bad cell when it cannot.
//!
//! Comments: a line whose first non-blank character is `#` is a comment (this covers
//! RELION's `# version 30001`). After a column name, a simple item's value, a `data_`
//! name or `loop_`, the rest of the line may be a `#...` comment. Inside loop rows `#`
//! is ordinary text: RELION never writes comments there, and a file name containing
//! `#` must not lose its tail. (The writer quotes any value containing `#`, so readers
//! that do treat `#` as a comment, like the Python `starfile` package, stay correct.)
//!
//! Line endings may be LF or CRLF; a UTF-8 byte-order mark is skipped; blank lines and
//! trailing spaces are ignored anywhere.
//!
//! Errors (with the 1-based line number): a row with the wrong number of values (naming
//! the block), an unterminated quote, two blocks with the same name, two columns with
//! the same name, a block that mixes a `loop_` with simple items or holds two loops,
//! text before the first `data_` block, and STAR features RELION never writes
//! (`save_` frames, `global_`, `stop_`).
//!
//! # Differences from cryoDRGN (`cryodrgn/starfile.py`)
//! cryoDRGN splits lines on whitespace (no quotes), takes any line starting with `_` as
//! a column header (so a simple item `_rlnFoo 1.0` becomes a column with no data), and
//! drops blocks without rows. We keep its *selection* rules, which the rest of the
//! pipeline depends on: the particle table is the largest non-optics loop table with
//! rows ([`StarFile::particles`]), and per-particle optics values follow
//! `Starfile.get_optics_values` ([`StarFile::optics_values_f64`]).
//!
//! `_rlnImageName` values (`index@path`, index 1-based) are left as text here; the
//! dataset layer splits them.
//!
//! # What is written
//! [`StarFile::to_text`] writes RELION 3.1 style: `# version 30001` before each block,
//! `loop_` tables with `_rlnX #n` headers and right-aligned columns, simple blocks as
//! aligned `_key value` lines. Values that would not read back as themselves are quoted
//! (empty, containing whitespace or `#`, starting with a quote, `_` or `;`, or starting
//! with a reserved word such as `data_`). The output re-parses to equal tables and is
//! read by the Python `starfile` package (tested in `core/tests/star.rs`).
//!
//! [`write_subset`] is different: it keeps some particle rows of an existing file and
//! copies everything else line for line, so the subset looks exactly like its source.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::atomic::{read_bytes, write_bytes};

/// The name of RELION's optics block.
pub const OPTICS_BLOCK: &str = "data_optics";
/// The particle column that points into the optics table.
pub const OPTICS_GROUP: &str = "_rlnOpticsGroup";

fn bad(msg: impl Into<String>) -> Error {
    Error::malformed("STAR", msg)
}

// ---------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------

/// One data block as a table of text cells.
///
/// Cells are stored back to back in one string with an offset table, not as one
/// `String` each, so a million-particle file costs about its own size in memory.
#[derive(Debug, Clone)]
pub struct StarTable {
    name: String,
    columns: Vec<String>,
    is_loop: bool,
    /// All cells, concatenated in row-major order.
    text: String,
    /// End offset of each cell in `text` (cell `i` is `text[ends[i-1]..ends[i]]`).
    ends: Vec<usize>,
    /// Source line numbers (1-based; 0 = not from a file): one per row for a loop
    /// table, one per column (item) for a simple key/value table.
    lines: Vec<usize>,
}

/// Tables are equal when their names, kinds, columns and cells are; source line
/// numbers are not compared (a block moved within a file is the same table).
impl PartialEq for StarTable {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.is_loop == other.is_loop
            && self.columns == other.columns
            && self.ends == other.ends
            && self.text == other.text
    }
}

impl StarTable {
    /// An empty `loop_` table for writing. `name` is the full block name including the
    /// `data_` prefix; column names include their leading `_`. Names are checked when
    /// the file is written ([`StarFile::validate`]).
    pub fn new(name: impl Into<String>, columns: Vec<String>) -> Self {
        StarTable {
            name: name.into(),
            columns,
            is_loop: true,
            text: String::new(),
            ends: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// A simple key/value block (`_key value` lines, no `loop_`): a one-row table.
    pub fn from_pairs(
        name: impl Into<String>,
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut t = StarTable {
            name: name.into(),
            columns: Vec::new(),
            is_loop: false,
            text: String::new(),
            ends: Vec::new(),
            lines: Vec::new(),
        };
        for (k, v) in pairs {
            if t.columns.contains(&k) {
                return Err(Error::invalid(format!(
                    "STAR block {}: key {k} given twice",
                    t.name
                )));
            }
            t.columns.push(k);
            t.push_cell(&v);
            t.lines.push(0);
        }
        Ok(t)
    }

    /// Block name including the `data_` prefix, e.g. `"data_particles"` or `"data_"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Column names, with their leading `_`, in file order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Number of columns.
    pub fn n_cols(&self) -> usize {
        self.columns.len()
    }

    /// Number of rows (1 for a non-empty key/value block).
    pub fn n_rows(&self) -> usize {
        if self.columns.is_empty() {
            0
        } else {
            self.ends.len() / self.columns.len()
        }
    }

    /// Whether this is a `loop_` table (false for a simple key/value block).
    pub fn is_loop(&self) -> bool {
        self.is_loop
    }

    /// Whether the table has a column of this name (leading `_` included).
    pub fn has_column(&self, name: &str) -> bool {
        self.column_index(name).is_some()
    }

    /// Index of a column (leading `_` included).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The text of a cell, or `None` when out of range.
    pub fn get(&self, row: usize, col: usize) -> Option<&str> {
        if col >= self.columns.len() {
            return None;
        }
        let i = row.checked_mul(self.columns.len())?.checked_add(col)?;
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { *self.ends.get(i - 1)? };
        self.text.get(start..end)
    }

    /// The text of a cell.
    ///
    /// # Panics
    /// If `row >= n_rows()` or `col >= columns().len()`, like slice indexing; use
    /// [`StarTable::get`] for a checked lookup.
    pub fn cell(&self, row: usize, col: usize) -> &str {
        match self.get(row, col) {
            Some(s) => s,
            None => panic!(
                "StarTable::cell({row}, {col}) out of range for {} ({} rows × {} columns)",
                self.name,
                self.n_rows(),
                self.columns.len()
            ),
        }
    }

    /// One row's cells, or `None` when out of range.
    pub fn row(&self, row: usize) -> Option<Vec<&str>> {
        if row >= self.n_rows() {
            return None;
        }
        (0..self.columns.len()).map(|c| self.get(row, c)).collect()
    }

    /// The 1-based source line of a row (`None` for tables not read from a file). For a
    /// key/value block this is the line of its first item.
    pub fn line_of_row(&self, row: usize) -> Option<usize> {
        let line = if self.is_loop {
            self.lines.get(row).copied()
        } else if row == 0 {
            self.lines.first().copied()
        } else {
            None
        };
        line.filter(|&l| l > 0)
    }

    fn line_of_cell(&self, row: usize, col: usize) -> Option<usize> {
        if self.is_loop {
            self.lines.get(row).copied()
        } else {
            self.lines.get(col).copied()
        }
        .filter(|&l| l > 0)
    }

    /// A column's cells as text; `None` if the column is absent.
    pub fn column_str(&self, name: &str) -> Option<Vec<&str>> {
        let c = self.column_index(name)?;
        (0..self.n_rows()).map(|r| self.get(r, c)).collect()
    }

    /// A column parsed as numbers; `Ok(None)` if the column is absent. A cell that is
    /// not a number is an error naming the column, the row (and its line in the file)
    /// and the text. Accepts what Rust's `f64` parser accepts, which covers RELION's
    /// output (`1.0`, `-3e-04`, `nan`, `inf`).
    pub fn column_f64(&self, name: &str) -> Result<Option<Vec<f64>>> {
        let Some(c) = self.column_index(name) else {
            return Ok(None);
        };
        let n = self.n_rows();
        let mut out = Vec::with_capacity(n);
        for r in 0..n {
            let s = self.get(r, c).unwrap_or("");
            match parse_number(s) {
                Some(v) => out.push(v),
                None => {
                    let line = match self.line_of_cell(r, c) {
                        Some(l) => format!(" (line {l})"),
                        None => String::new(),
                    };
                    return Err(bad(format!(
                        "column {name} of {}: row {}{line}: {s:?} is not a number",
                        self.name,
                        r + 1
                    )));
                }
            }
        }
        Ok(Some(out))
    }

    /// Append a row to a `loop_` table. Errors if the row has the wrong number of
    /// values, the table has no columns, or it is a key/value block.
    pub fn push_row(&mut self, row: Vec<String>) -> Result<()> {
        if !self.is_loop {
            return Err(Error::invalid(format!(
                "STAR block {} is a key/value block; rows cannot be added",
                self.name
            )));
        }
        if self.columns.is_empty() {
            return Err(Error::invalid(format!(
                "STAR table {} has no columns; rows cannot be added",
                self.name
            )));
        }
        if row.len() != self.columns.len() {
            return Err(Error::invalid(format!(
                "STAR table {}: row has {} values, the table has {} columns",
                self.name,
                row.len(),
                self.columns.len()
            )));
        }
        for v in &row {
            self.push_cell(v);
        }
        self.lines.push(0);
        Ok(())
    }

    fn push_cell(&mut self, v: &str) {
        self.text.push_str(v);
        self.ends.push(self.text.len());
    }

    fn empty_block(name: String) -> Self {
        StarTable {
            name,
            columns: Vec::new(),
            is_loop: false,
            text: String::new(),
            ends: Vec::new(),
            lines: Vec::new(),
        }
    }
}

/// Parse a STAR number. Rust's parser is stricter than Python's `float` only in ways
/// RELION never exercises (no `1_000`, no surrounding blanks, which tokenising removed).
fn parse_number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok()
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

/// A whole `.star` file: its blocks in file order.
#[derive(Debug, Clone, Default)]
pub struct StarFile {
    blocks: Vec<StarTable>,
    path: Option<PathBuf>,
}

/// Files are equal when their blocks are (in order); where they were read from is not
/// compared.
impl PartialEq for StarFile {
    fn eq(&self, other: &Self) -> bool {
        self.blocks == other.blocks
    }
}

impl StarFile {
    /// An empty file, for writing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a block. Duplicate names are reported by [`StarFile::write`].
    pub fn push_block(&mut self, t: StarTable) {
        self.blocks.push(t);
    }

    /// Parse the text of a `.star` file.
    pub fn parse(text: &str) -> Result<Self> {
        Parser::default().run(text)
    }

    /// Read and parse a `.star` file; errors name the file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_bytes(path)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            Error::format(
                path,
                format!(
                    "not a valid STAR file: not UTF-8 text (bad byte at offset {})",
                    e.valid_up_to()
                ),
            )
        })?;
        let mut f = Self::parse(text).map_err(|e| e.in_file(path))?;
        f.path = Some(path.to_path_buf());
        Ok(f)
    }

    /// The file this was read from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn attach(&self, e: Error) -> Error {
        match &self.path {
            Some(p) => e.in_file(p),
            None => e,
        }
    }

    /// All blocks in file order.
    pub fn blocks(&self) -> &[StarTable] {
        &self.blocks
    }

    /// The block of this name: `"data_particles"`, or the name without its `data_`
    /// prefix (`"particles"`) when no block is named exactly that.
    pub fn block(&self, name: &str) -> Option<&StarTable> {
        self.blocks.iter().find(|b| b.name == name).or_else(|| {
            self.blocks
                .iter()
                .find(|b| b.name.strip_prefix("data_") == Some(name))
        })
    }

    /// The `data_optics` block, if present (RELION 3.1 and later).
    pub fn optics(&self) -> Option<&StarTable> {
        self.blocks.iter().find(|b| b.name == OPTICS_BLOCK)
    }

    /// The particle table, by cryoDRGN's rule: the `loop_` table with the most rows
    /// among blocks other than `data_optics` (the first one on a tie). Key/value blocks
    /// and blocks without rows are never chosen. Errors if there is none.
    pub fn particles(&self) -> Result<&StarTable> {
        let mut best: Option<&StarTable> = None;
        for b in &self.blocks {
            if b.name == OPTICS_BLOCK || !b.is_loop || b.n_rows() == 0 {
                continue;
            }
            if best.is_none_or(|x| b.n_rows() > x.n_rows()) {
                best = Some(b);
            }
        }
        best.ok_or_else(|| {
            let names: Vec<&str> = self.blocks.iter().map(|b| b.name.as_str()).collect();
            self.attach(bad(format!(
                "no particle table: no loop_ block with rows other than data_optics (blocks: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )))
        })
    }

    /// For each particle row, the optics-table row that applies to it; `None` when the
    /// field must come from the particle table instead.
    ///
    /// cryoDRGN drops blocks without rows, so an empty `data_optics` counts as absent.
    fn optics_rows(
        &self,
        parts: &StarTable,
        field: &str,
    ) -> Result<Option<(&StarTable, Vec<usize>)>> {
        let Some(opt) = self.optics() else {
            return Ok(None);
        };
        if opt.n_rows() == 0 || !opt.has_column(field) {
            return Ok(None);
        }
        let Some(groups) = parts.column_str(OPTICS_GROUP) else {
            // No group column: the first optics row applies to every particle.
            return Ok(Some((opt, vec![0; parts.n_rows()])));
        };
        let Some(opt_groups) = opt.column_str(OPTICS_GROUP) else {
            return Err(bad(format!(
                "the particles have an {OPTICS_GROUP} column but {OPTICS_BLOCK} does not"
            )));
        };
        let mut index: HashMap<Cow<str>, usize> = HashMap::with_capacity(opt_groups.len());
        for (row, g) in opt_groups.iter().enumerate() {
            if let Some(prev) = index.insert(group_key(g), row) {
                return Err(bad(format!(
                    "optics group {g} appears twice in {OPTICS_BLOCK} (rows {} and {})",
                    prev + 1,
                    row + 1
                )));
            }
        }
        let mut rows = Vec::with_capacity(groups.len());
        for (r, g) in groups.iter().enumerate() {
            match index.get(&group_key(g)) {
                Some(&o) => rows.push(o),
                None => {
                    let line = parts
                        .line_of_row(r)
                        .map(|l| format!(" (line {l})"))
                        .unwrap_or_default();
                    return Err(bad(format!(
                        "particle row {}{line} of {}: {OPTICS_GROUP} {g} is not in {OPTICS_BLOCK} (groups: {})",
                        r + 1,
                        parts.name,
                        opt_groups.join(", ")
                    )));
                }
            }
        }
        Ok(Some((opt, rows)))
    }

    /// One value per particle row for an optics field, as numbers.
    ///
    /// cryoDRGN's `Starfile.get_optics_values`: if `data_optics` has rows and this
    /// column, the value comes from the optics row whose `_rlnOpticsGroup` matches the
    /// particle's (groups compare as numbers when both parse, so `1` matches `1.0`), or
    /// from the first optics row when the particles have no `_rlnOpticsGroup`. The
    /// optics table wins over a same-named particle column. Otherwise the particle
    /// column is used; `Ok(None)` if neither has the field.
    pub fn optics_values_f64(&self, field: &str) -> Result<Option<Vec<f64>>> {
        self.optics_values_f64_inner(field)
            .map_err(|e| self.attach(e))
    }

    fn optics_values_f64_inner(&self, field: &str) -> Result<Option<Vec<f64>>> {
        let parts = self.particles()?;
        match self.optics_rows(parts, field)? {
            Some((opt, rows)) => {
                let vals = opt.column_f64(field)?.unwrap_or_default();
                rows.iter()
                    .map(|&r| {
                        vals.get(r)
                            .copied()
                            .ok_or_else(|| bad(format!("optics row {r} out of range")))
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Some)
            }
            None => parts.column_f64(field),
        }
    }

    /// As [`StarFile::optics_values_f64`], as text.
    pub fn optics_values_str(&self, field: &str) -> Result<Option<Vec<String>>> {
        let parts = self.particles()?;
        match self.optics_rows(parts, field).map_err(|e| self.attach(e))? {
            Some((opt, rows)) => {
                let c = opt.column_index(field).unwrap_or(0);
                Ok(Some(
                    rows.iter()
                        .map(|&r| opt.get(r, c).unwrap_or("").to_string())
                        .collect(),
                ))
            }
            None => Ok(parts
                .column_str(field)
                .map(|v| v.into_iter().map(str::to_string).collect())),
        }
    }

    /// Check that the file can be written and read back as itself: block names start
    /// with `data_` and are unique and blank-free, column names start with `_` and are
    /// unique and blank-free, and every value can be quoted (no line breaks, not both
    /// kinds of quote followed by a blank).
    pub fn validate(&self) -> Result<()> {
        let mut names = HashSet::new();
        for b in &self.blocks {
            if !b.name.starts_with("data_") || b.name.contains(char::is_whitespace) {
                return Err(Error::invalid(format!(
                    "STAR block name {:?} must start with data_ and contain no blanks",
                    b.name
                )));
            }
            if !names.insert(b.name.as_str()) {
                return Err(Error::invalid(format!(
                    "STAR block name {} is used twice",
                    b.name
                )));
            }
            let mut cols = HashSet::new();
            for c in &b.columns {
                if c.len() < 2 || !c.starts_with('_') || c.contains(char::is_whitespace) {
                    return Err(Error::invalid(format!(
                        "STAR column name {c:?} in {} must start with _ and contain no blanks",
                        b.name
                    )));
                }
                if !cols.insert(c.as_str()) {
                    return Err(Error::invalid(format!(
                        "STAR column {c} appears twice in {}",
                        b.name
                    )));
                }
            }
            for r in 0..b.n_rows() {
                for (c, col) in b.columns.iter().enumerate() {
                    let v = b.get(r, c).unwrap_or("");
                    if quote_value(v).is_none() {
                        return Err(Error::invalid(format!(
                            "STAR value {v:?} (column {col} of {}, row {}) cannot be written: \
                             it contains a line break or both quote characters followed by blanks",
                            b.name,
                            r + 1
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The file as text, RELION 3.1 style (see the module documentation). Call
    /// [`StarFile::validate`] first when the tables come from untrusted input: values
    /// that cannot be represented are written as best as possible.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for b in &self.blocks {
            s.push_str("\n# version 30001\n\n");
            s.push_str(&b.name);
            s.push_str("\n\n");
            let quoted = |r: usize, c: usize| -> Cow<str> {
                let v = b.get(r, c).unwrap_or("");
                quote_value(v).unwrap_or(Cow::Borrowed(v))
            };
            if b.is_loop {
                s.push_str("loop_ \n");
                for (i, c) in b.columns.iter().enumerate() {
                    let _ = writeln!(s, "{c} #{} ", i + 1);
                }
                let n_rows = b.n_rows();
                let mut widths = vec![0usize; b.columns.len()];
                for r in 0..n_rows {
                    for (c, w) in widths.iter_mut().enumerate() {
                        *w = (*w).max(quoted(r, c).chars().count());
                    }
                }
                for r in 0..n_rows {
                    for (c, &w) in widths.iter().enumerate() {
                        if c > 0 {
                            s.push(' ');
                        }
                        let v = quoted(r, c);
                        for _ in v.chars().count()..w {
                            s.push(' ');
                        }
                        s.push_str(&v);
                    }
                    s.push('\n');
                }
            } else if b.n_rows() == 1 {
                let kw = b
                    .columns
                    .iter()
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0);
                for (c, key) in b.columns.iter().enumerate() {
                    let v = quoted(0, c);
                    let _ = write!(s, "{key}");
                    for _ in key.chars().count()..kw + 1 {
                        s.push(' ');
                    }
                    let _ = writeln!(s, "{v}");
                }
            }
            s.push('\n');
        }
        s
    }

    /// Write the file atomically (temporary file, then rename) after
    /// [`StarFile::validate`].
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.validate()?;
        write_bytes(path, self.to_text().as_bytes())
    }
}

/// Optics groups compare as numbers when they parse as numbers (pandas coerces both
/// columns to numbers before matching), else as text.
fn group_key(g: &str) -> Cow<'_, str> {
    match parse_number(g) {
        Some(v) if v.is_finite() => Cow::Owned(format!("{v}")),
        _ => Cow::Borrowed(g),
    }
}

const RESERVED: [&str; 5] = ["data_", "loop_", "save_", "global_", "stop_"];

fn starts_with_reserved(v: &str) -> bool {
    RESERVED
        .iter()
        .any(|r| v.get(..r.len()).is_some_and(|p| p.eq_ignore_ascii_case(r)))
}

/// How to write a value so that it reads back as itself: unchanged, quoted, or `None`
/// when impossible (a line break, or both quote characters followed by blanks).
fn quote_value(v: &str) -> Option<Cow<'_, str>> {
    if v.contains(['\n', '\r']) {
        return None;
    }
    let needs = v.is_empty()
        || v.contains(char::is_whitespace)
        || v.contains('#')
        || v.starts_with(['"', '\'', '_', ';'])
        || starts_with_reserved(v);
    if !needs {
        return Some(Cow::Borrowed(v));
    }
    for q in ['"', '\''] {
        // Inside quotes, `q` followed by a blank would end the value early.
        let mut it = v.chars().peekable();
        let mut ok = true;
        while let Some(c) = it.next() {
            if c == q && it.peek().is_some_and(|n| n.is_whitespace()) {
                ok = false;
                break;
            }
        }
        if ok {
            return Some(Cow::Owned(format!("{q}{v}{q}")));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Subsets
// ---------------------------------------------------------------------------------------

/// Write a copy of the `.star` file `original` to `out` in which the particle table keeps
/// only `rows` (0-based, in the order given; an index may repeat), and return how many
/// rows were written. This is cryoDRGN's `write_star --ind` without re-formatting: the
/// file is copied line by line, so every other block (`data_optics`, key/value blocks),
/// the `# version` lines, comments, column headers, quoting, number formatting and line
/// endings stay byte for byte as they were, and each kept row is its original line.
///
/// The particle table is the one [`StarFile::particles`] picks (cryoDRGN's rule), in RELION
/// 3.0 files (a single table) as in 3.1+ and 5 (optics plus particles, in either order).
/// Blank and `#` comment lines *between* particle rows are not kept (they belong to no
/// row; RELION never writes them).
///
/// Errors: the file does not parse, `rows` is empty (the result would have no particle
/// table), an index is out of range (naming the file, the table's row count and how many
/// indices are out of range), or the written table would no longer be the particle table
/// by cryoDRGN's rule (another loop block has more rows than the subset). The output is
/// written atomically.
pub fn write_subset(original: &Path, rows: &[usize], out: &Path) -> Result<usize> {
    let bytes = read_bytes(original)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        Error::format(
            original,
            format!(
                "not a valid STAR file: not UTF-8 text (bad byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    let subset = subset_text(original, text, rows)?;
    write_bytes(out, subset.as_bytes())?;
    Ok(rows.len())
}

/// The text of the subset file (see [`write_subset`]); errors name `original`.
fn subset_text(original: &Path, text: &str, rows: &[usize]) -> Result<String> {
    let refuse = |msg: String| Error::format(original, msg);
    let file = StarFile::parse(text).map_err(|e| e.in_file(original))?;
    let table = file.particles().map_err(|e| e.in_file(original))?;
    let n = table.n_rows();
    if rows.is_empty() {
        return Err(refuse(format!(
            "no rows selected: refusing to write a subset without particles \
             (the particle table {} has {n} rows)",
            table.name()
        )));
    }
    let out_of_range: Vec<usize> = rows.iter().copied().filter(|&r| r >= n).collect();
    if let Some(&first) = out_of_range.first() {
        let largest = out_of_range.iter().copied().max().unwrap_or(first);
        return Err(refuse(format!(
            "{} of the {} row indices are out of range (first {first}, largest {largest}): \
             the particle table {} has {n} rows (indices 0..={})",
            out_of_range.len(),
            rows.len(),
            table.name(),
            n.saturating_sub(1)
        )));
    }
    // 0-based source line of every row; the parser records one per loop row.
    let row_lines: Vec<usize> = (0..n)
        .map(|r| table.line_of_row(r).map(|l| l - 1))
        .collect::<Option<_>>()
        .ok_or_else(|| refuse("internal: a particle row has no source line".into()))?;
    let (Some(&first_line), Some(&last_line)) = (row_lines.first(), row_lines.last()) else {
        return Err(refuse("the particle table has no rows".into()));
    };
    // Split exactly as the parser numbered the lines, keeping any `\r`, so that joining
    // with `\n` gives back the original bytes.
    let lines: Vec<&str> = text.split('\n').collect();
    let line = |i: usize| {
        lines
            .get(i)
            .copied()
            .ok_or_else(|| refuse(format!("internal: line {} is out of range", i + 1)))
    };
    let mut out = String::new();
    for i in 0..first_line {
        out.push_str(line(i)?);
        out.push('\n');
    }
    for &r in rows {
        let l = row_lines
            .get(r)
            .copied()
            .ok_or_else(|| refuse(format!("internal: row {r} out of range")))?;
        out.push_str(line(l)?);
        out.push('\n');
    }
    for i in last_line + 1..lines.len() {
        out.push_str(line(i)?);
        if i + 1 < lines.len() {
            out.push('\n');
        }
    }
    // The copy must read back with the same block as its particle table, holding exactly
    // the requested rows: a smaller table could lose cryoDRGN's "largest table" rule to
    // another loop block.
    let back = StarFile::parse(&out).map_err(|e| e.in_file(original))?;
    let t = back.particles().map_err(|e| e.in_file(original))?;
    if t.name() != table.name() || t.n_rows() != rows.len() {
        return Err(refuse(format!(
            "a subset of {} rows of {} would not read back as the particle table \
             (block {} with {} rows is larger)",
            rows.len(),
            table.name(),
            t.name(),
            t.n_rows()
        )));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The parser
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// In a block, before any item or loop.
    Empty,
    /// Simple `_key value` items.
    Pairs,
    /// After `loop_`, reading column names.
    LoopHeader,
    /// Reading loop rows.
    LoopData,
}

#[derive(Default)]
struct Parser {
    blocks: Vec<StarTable>,
    names: HashSet<String>,
    cur: Option<(StarTable, Mode)>,
    /// Column names of the current block, for the duplicate check in O(1).
    cols: HashSet<String>,
    /// A key whose value is expected on a following line: (key, line).
    pending_key: Option<(String, usize)>,
    /// An open `;` text field: (key, line, lines so far joined by `\n`; `None` until
    /// the first line, so an empty opening line adds no leading line break).
    text_field: Option<(String, usize, Option<String>)>,
}

/// The next whitespace-separated token of `s` (leading blanks skipped), with quotes
/// removed, and the rest of the line. `Ok(None)` at the end of the line.
fn next_token(s: &str) -> std::result::Result<Option<(&str, &str)>, &'static str> {
    let s = s.trim_start();
    let mut chars = s.char_indices();
    let Some((_, first)) = chars.next() else {
        return Ok(None);
    };
    if first == '"' || first == '\'' {
        // A quote closes the value only when followed by a blank or the line's end.
        let mut prev_quote_at: Option<usize> = None;
        for (i, c) in s.char_indices().skip(1) {
            if let Some(q) = prev_quote_at {
                if c.is_whitespace() {
                    return Ok(Some((
                        s.get(1..q).unwrap_or(""),
                        s.get(q + 1..).unwrap_or(""),
                    )));
                }
                prev_quote_at = None;
            }
            if c == first {
                prev_quote_at = Some(i);
            }
        }
        if let Some(q) = prev_quote_at {
            return Ok(Some((s.get(1..q).unwrap_or(""), "")));
        }
        return Err("unterminated quoted value");
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Ok(Some((
        s.get(..end).unwrap_or(""),
        s.get(end..).unwrap_or(""),
    )))
}

/// Whether the rest of a line is blank or a `#` comment.
fn rest_is_comment(rest: &str) -> bool {
    let r = rest.trim_start();
    r.is_empty() || r.starts_with('#')
}

fn line_preview(s: &str) -> String {
    let t: String = s.chars().take(60).collect();
    if s.chars().count() > 60 {
        format!("{t:?}...")
    } else {
        format!("{t:?}")
    }
}

impl Parser {
    fn run(mut self, text: &str) -> Result<StarFile> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut n = 0usize;
        for raw in text.split('\n') {
            n += 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            self.line(n, line)?;
        }
        if let Some((key, l, _)) = self.text_field.take() {
            return Err(bad(format!(
                "line {l}: the ;-text field of {key} is never closed"
            )));
        }
        self.finish_block()?;
        Ok(StarFile {
            blocks: self.blocks,
            path: None,
        })
    }

    fn block_name(&self) -> &str {
        self.cur.as_ref().map_or("", |(t, _)| t.name.as_str())
    }

    fn finish_block(&mut self) -> Result<()> {
        if let Some((key, l)) = self.pending_key.take() {
            return Err(bad(format!(
                "line {l}: {key} in {} has no value",
                self.block_name()
            )));
        }
        if let Some((t, _)) = self.cur.take() {
            self.blocks.push(t);
        }
        Ok(())
    }

    fn add_pair(&mut self, key: &str, value: &str, n: usize) -> Result<()> {
        let Some((t, mode)) = self.cur.as_mut() else {
            return Err(bad(format!("line {n}: {key} before the first data_ block")));
        };
        if !self.cols.insert(key.to_string()) {
            return Err(bad(format!("line {n}: {key} appears twice in {}", t.name)));
        }
        t.columns.push(key.to_string());
        t.push_cell(value);
        t.lines.push(n);
        *mode = Mode::Pairs;
        Ok(())
    }

    fn line(&mut self, n: usize, line: &str) -> Result<()> {
        // Inside a multi-line ;-text field everything is text until a line starting ';'.
        if let Some((key, start, mut acc)) = self.text_field.take() {
            if let Some(rest) = line.strip_prefix(';') {
                if !rest_is_comment(rest) {
                    return Err(bad(format!(
                        "line {n}: unexpected text after the ; closing the text field of {key}"
                    )));
                }
                return self.add_pair(&key, acc.as_deref().unwrap_or(""), start);
            }
            match acc.as_mut() {
                Some(a) => {
                    a.push('\n');
                    a.push_str(line);
                }
                None => acc = Some(line.to_string()),
            }
            self.text_field = Some((key, start, acc));
            return Ok(());
        }

        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return Ok(());
        }

        if let Some((key, kl)) = self.pending_key.take() {
            if let Some(rest) = line.strip_prefix(';') {
                let first = (!rest.is_empty()).then(|| rest.to_string());
                self.text_field = Some((key, kl, first));
                return Ok(());
            }
            let unquoted = !trimmed.starts_with(['"', '\'']);
            if unquoted && (trimmed.starts_with('_') || starts_with_reserved(trimmed)) {
                let hint = if trimmed.starts_with('_') {
                    " (is a loop_ line missing before the column names?)"
                } else {
                    ""
                };
                return Err(bad(format!(
                    "line {kl}: {key} in {} has no value{hint}",
                    self.block_name()
                )));
            }
            let (value, rest) = next_token(trimmed)
                .map_err(|m| bad(format!("line {n}: {m}: {}", line_preview(trimmed))))?
                .unwrap_or(("", ""));
            if !rest_is_comment(rest) {
                return Err(bad(format!(
                    "line {n}: more than one value for {key}: {}",
                    line_preview(trimmed)
                )));
            }
            return self.add_pair(&key, value, kl);
        }

        // The first word, unquoted, decides what the line is.
        let word_end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let word = trimmed.get(..word_end).unwrap_or("");
        let rest = trimmed.get(word_end..).unwrap_or("");

        if word.starts_with("data_") {
            if !rest_is_comment(rest) {
                return Err(bad(format!(
                    "line {n}: unexpected text after the block name {word}"
                )));
            }
            self.finish_block()?;
            if !self.names.insert(word.to_string()) {
                return Err(bad(format!("line {n}: block {word} appears twice")));
            }
            self.cur = Some((StarTable::empty_block(word.to_string()), Mode::Empty));
            self.cols.clear();
            return Ok(());
        }
        if word.starts_with("save_") || word == "global_" || word == "stop_" {
            return Err(bad(format!(
                "line {n}: {word} is a STAR feature RELION does not use; not supported"
            )));
        }

        let Some((table, mode)) = self.cur.as_mut() else {
            return Err(bad(format!(
                "line {n}: {} before the first data_ block",
                line_preview(trimmed)
            )));
        };

        if word == "loop_" {
            if *mode != Mode::Empty {
                let why = if *mode == Mode::Pairs {
                    "mixes simple _key value items with a loop_"
                } else {
                    "has a second loop_"
                };
                return Err(bad(format!(
                    "line {n}: block {} {why}; one table per data block is supported",
                    table.name
                )));
            }
            if !rest_is_comment(rest) {
                return Err(bad(format!("line {n}: unexpected text after loop_")));
            }
            table.is_loop = true;
            *mode = Mode::LoopHeader;
            return Ok(());
        }

        if word.starts_with('_') {
            match *mode {
                Mode::LoopHeader => {
                    if !rest_is_comment(rest) {
                        return Err(bad(format!(
                            "line {n}: unexpected text after the column name {word}: {}",
                            line_preview(rest.trim())
                        )));
                    }
                    if !self.cols.insert(word.to_string()) {
                        return Err(bad(format!(
                            "line {n}: column {word} appears twice in {}",
                            table.name
                        )));
                    }
                    table.columns.push(word.to_string());
                    Ok(())
                }
                Mode::LoopData => Err(bad(format!(
                    "line {n}: item {word} after the rows of the loop in {}; one table per data block is supported",
                    table.name
                ))),
                Mode::Empty | Mode::Pairs => {
                    if rest_is_comment(rest) {
                        // The value follows on a later line.
                        self.pending_key = Some((word.to_string(), n));
                        return Ok(());
                    }
                    let (value, after) = next_token(rest)
                        .map_err(|m| bad(format!("line {n}: {m}: {}", line_preview(trimmed))))?
                        .unwrap_or(("", ""));
                    if !rest_is_comment(after) {
                        return Err(bad(format!(
                            "line {n}: more than one value for {word}: {}",
                            line_preview(trimmed)
                        )));
                    }
                    self.add_pair(word, value, n)
                }
            }
        } else {
            match *mode {
                Mode::LoopHeader | Mode::LoopData => {
                    let n_cols = table.columns.len();
                    if n_cols == 0 {
                        return Err(bad(format!(
                            "line {n}: a row in {} before any column name after loop_",
                            table.name
                        )));
                    }
                    let mut rest = trimmed;
                    let mut count = 0usize;
                    let start_cells = table.ends.len();
                    let start_text = table.text.len();
                    loop {
                        match next_token(rest) {
                            Ok(Some((v, r))) => {
                                count += 1;
                                if count <= n_cols {
                                    table.push_cell(v);
                                }
                                rest = r;
                            }
                            Ok(None) => break,
                            Err(m) => {
                                table.ends.truncate(start_cells);
                                table.text.truncate(start_text);
                                return Err(bad(format!(
                                    "line {n}: {m} in {}: {}",
                                    table.name,
                                    line_preview(trimmed)
                                )));
                            }
                        }
                    }
                    if count != n_cols {
                        table.ends.truncate(start_cells);
                        table.text.truncate(start_text);
                        return Err(bad(format!(
                            "line {n}: a row of {} has {count} values, but the loop has {n_cols} columns",
                            table.name
                        )));
                    }
                    table.lines.push(n);
                    *mode = Mode::LoopData;
                    Ok(())
                }
                Mode::Empty | Mode::Pairs => Err(bad(format!(
                    "line {n}: unexpected text in block {} (not in a loop_ and not a _key value item): {}",
                    table.name,
                    line_preview(trimmed)
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_quotes() {
        assert_eq!(next_token("  a b").unwrap(), Some(("a", " b")));
        assert_eq!(next_token("\"a b\" c").unwrap(), Some(("a b", " c")));
        assert_eq!(next_token("'it's' x").unwrap(), Some(("it's", " x")));
        assert_eq!(next_token("''").unwrap(), Some(("", "")));
        assert!(next_token("\"abc").is_err());
        assert!(next_token("\"a\"b").is_err());
        assert_eq!(next_token("   ").unwrap(), None);
    }

    #[test]
    fn quoting_round_trips() {
        for v in [
            "", "a b", "#x", "x#y", "_a", "data_x", "'q", "\"q", "a\" b", "a' b\"", "[0.1,2]",
            "é ü",
        ] {
            let q = quote_value(v).unwrap();
            let (back, rest) = next_token(&q).unwrap().unwrap();
            assert_eq!(back, v, "{q}");
            assert!(rest.is_empty());
        }
        assert!(quote_value("a\" b' c").is_none());
        assert!(quote_value("a\nb").is_none());
    }

    #[test]
    fn text_field_and_next_line_values() {
        let f = StarFile::parse("data_g\n_a\n1.5\n_b\n;line one\nline two\n;\n_c 'x y' # note\n")
            .unwrap();
        let t = &f.blocks()[0];
        assert!(!t.is_loop());
        assert_eq!(t.n_rows(), 1);
        assert_eq!(t.column_str("_a").unwrap(), vec!["1.5"]);
        assert_eq!(t.column_str("_b").unwrap(), vec!["line one\nline two"]);
        assert_eq!(t.column_str("_c").unwrap(), vec!["x y"]);
    }
}
