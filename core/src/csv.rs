//! CSV for exports and imports: rows written with the `csv` crate behind the spreadsheet
//! formula guard, and the guard's exact inverse for reading cells back.
//!
//! Foundation: audit search and resource export write CSV through [`CsvRows`], resource import
//! reads it and calls [`unguard`]; none of it is HTTP. This module never decides what a column
//! means (that is the caller's schema) and never writes a text cell without the guard.

use std::borrow::Cow;

/// Whether a text cell gets the guard: it could start a spreadsheet formula (`=`, `+`, `-`,
/// `@`, tab or carriage return), or it starts with the guard itself (`'`), so that removing
/// one `'` on import gives back exactly what was exported.
fn needs_guard(s: &str) -> bool {
    s.starts_with(['=', '+', '-', '@', '\t', '\r', '\''])
}

/// A text cell as it is exported: `'` in front when [`needs_guard`] says so (`=x` → `'=x`,
/// `'abc` → `''abc`, `-1` → `'-1`), unchanged otherwise.
pub fn guard(s: &str) -> Cow<'_, str> {
    if needs_guard(s) {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// A text cell as it is imported: exactly one leading `'` removed (the guard), nothing else
/// touched. `unguard(&guard(s)) == s` for every `s`.
pub fn unguard(s: &str) -> &str {
    s.strip_prefix('\'').unwrap_or(s)
}

/// One cell of a row.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    /// Text: guarded, and quoted unless it reads as a number.
    Text(&'a str),
    /// A number or boolean written as it is (a guard would corrupt `-1`), or an empty cell.
    Plain(&'a str),
}

/// Rows of one export, written into memory and taken a page at a time, so a stream never
/// holds more than the page it is sending.
pub struct CsvRows {
    out: csv::Writer<Vec<u8>>,
}

impl Default for CsvRows {
    fn default() -> Self {
        Self::new()
    }
}

impl CsvRows {
    pub fn new() -> Self {
        Self {
            out: csv::WriterBuilder::new()
                .quote_style(csv::QuoteStyle::NonNumeric)
                .terminator(csv::Terminator::Any(b'\n'))
                .flexible(true)
                .from_writer(Vec::new()),
        }
    }

    /// A header line: the column names, guarded, quoted only where CSV needs it.
    pub fn header<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        let names: Vec<Cow<'_, str>> = names.into_iter().map(guard).collect();
        write_infallible(w.write_record(names.iter().map(|n| n.as_bytes())));
        into_bytes(w)
    }

    /// Writes one row.
    pub fn row<'a>(&mut self, cells: impl IntoIterator<Item = Cell<'a>>) {
        for cell in cells {
            let result = match cell {
                Cell::Text(s) => self.out.write_field(guard(s).as_bytes()),
                Cell::Plain(s) => self.out.write_field(s),
            };
            write_infallible(result);
        }
        write_infallible(self.out.write_record(None::<&[u8]>));
    }

    /// The rows written since the last call.
    pub fn take(&mut self) -> Vec<u8> {
        into_bytes(std::mem::take(self).out)
    }
}

/// What a writer wrote (flushing its buffer into the `Vec`).
fn into_bytes(w: csv::Writer<Vec<u8>>) -> Vec<u8> {
    match w.into_inner() {
        Ok(bytes) => bytes,
        Err(e) => unreachable!("writing CSV into memory failed: {}", e.error()),
    }
}

/// Writing into a `Vec` cannot fail: the `csv` writer reports only I/O errors of its sink.
fn write_infallible(result: csv::Result<()>) {
    if let Err(e) = result {
        unreachable!("writing CSV into memory failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(cells: &[Cell<'_>]) -> String {
        let mut rows = CsvRows::new();
        rows.row(cells.iter().copied());
        String::from_utf8(rows.take()).unwrap()
    }

    /// Reads one exported row back as an import does: the `csv` reader, then `unguard`.
    fn read_back(line: &str) -> Vec<String> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        record.iter().map(|c| unguard(c).to_string()).collect()
    }

    #[test]
    fn the_guard_defuses_formulas_and_its_own_prefix() {
        for (cell, exported) in [
            ("=x", "'=x"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("'abc", "''abc"),
            ("'=x", "''=x"),
            ("''", "'''"),
            ("plain", "plain"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(guard(cell), exported, "{cell:?}");
            assert_eq!(unguard(exported), cell, "{cell:?}");
        }
        assert_eq!(unguard("'abc"), "abc", "one guard removed");
        assert_eq!(unguard("''abc"), "'abc", "exactly one");
        assert_eq!(unguard("abc'"), "abc'");
    }

    #[test]
    fn rows_quote_text_and_leave_numbers_bare() {
        assert_eq!(
            written(&[Cell::Text("=HYPERLINK(\"x\")"), Cell::Plain("-1")]),
            "\"'=HYPERLINK(\"\"x\"\")\",-1\n"
        );
        assert_eq!(
            written(&[Cell::Text("-1"), Cell::Plain("true"), Cell::Plain("")]),
            "\"'-1\",\"true\",\"\"\n"
        );
        assert_eq!(
            written(&[
                Cell::Text("a,b"),
                Cell::Text("two\nlines"),
                Cell::Text("say \"hi\"")
            ]),
            "\"a,b\",\"two\nlines\",\"say \"\"hi\"\"\"\n"
        );
        assert_eq!(
            CsvRows::header(["id", "title", "=x", "a,b"]),
            b"id,title,'=x,\"a,b\"\n"
        );
    }

    #[test]
    fn exported_cells_read_back_exactly() {
        let cells = [
            "=x",
            "'abc",
            "'=x",
            "-1",
            "+",
            "say \"hi\"",
            "two\nlines\r\nand a third",
            "a,b,,c",
            "\"",
            "'",
            "",
            "plain",
            "12",
            "  padded  ",
            "ünïcödé",
        ];
        let line = written(&cells.map(Cell::Text));
        assert_eq!(read_back(&line), cells, "{line}");
    }

    #[test]
    fn pages_are_taken_separately() {
        let mut rows = CsvRows::new();
        rows.row([Cell::Text("a")]);
        assert_eq!(rows.take(), b"\"a\"\n");
        rows.row([Cell::Text("b")]);
        assert_eq!(rows.take(), b"\"b\"\n");
        assert!(rows.take().is_empty());
    }
}
