//! Numbers as the list operations see them.
//!
//! The contract (taskd(8): PROTOCOL, "Values"; OPERATIONS, "Numbers") makes integer requests exact: a
//! request whose values are all integers within i64 is computed in i128 and written exactly,
//! anything else is computed in doubles and written the way ECMAScript writes numbers. This
//! module owns that boundary: [`Values`] carries a request's values in whichever of the two
//! domains it belongs to, [`Num`] is a result that may be exact or a double, and the parsers
//! (text and JSON) decide the domain while validating the grammar. Every transport (line
//! protocol, UDP, HTTP, JSON) goes through here so they all agree on digits and errors.

#[cfg(test)]
mod bench;
mod fast;
mod format;
mod parse;
#[cfg(test)]
mod reference;

pub use format::write_u64;
pub use parse::{count_text_values, parse_json_values, parse_text_list};

/// Parsed values of one request: all integers (text had no '.' and no exponent and fits i64),
/// else all as doubles.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Ints(Vec<i64>),
    Floats(Vec<f64>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Ints(v) => v.len(),
            Values::Floats(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A result number: exact integer, an odd integer n meaning n/2 (median of two integers), or a
/// double.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(i128),
    Half(i128),
    Float(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueErrorKind {
    Parse,
    Range,
}

/// A value that could not be used; `kind` picks the reply's error code (`parse` or `range`).
#[derive(Debug, Clone, PartialEq)]
pub struct ValueError {
    pub kind: ValueErrorKind,
    pub message: String,
}

impl ValueError {
    pub(crate) fn parse(message: String) -> Self {
        ValueError {
            kind: ValueErrorKind::Parse,
            message,
        }
    }

    pub(crate) fn range(message: String) -> Self {
        ValueError {
            kind: ValueErrorKind::Range,
            message,
        }
    }
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValueError {}
