//! The operations a history holds.

use std::fmt;

/// What a client asked of one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Read the key.
    Get,
    /// Write a value.
    Put(String),
    /// Delete the key.
    Delete,
    /// Write `new` (`None`: delete) if the key holds `expect` (`None`:
    /// absent), as one transaction.
    Cas {
        /// The value compared against.
        expect: Option<String>,
        /// The value written if it matched.
        new: Option<String>,
    },
}

/// What the store answered, if it answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A get's value (`None`: absent).
    Value(Option<String>),
    /// A put or delete was applied.
    Done,
    /// Whether a compare-and-swap matched (and so wrote).
    Swapped(bool),
    /// No answer: the operation may have taken effect, or not.
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that made it (clients make one operation at a time).
    pub client: usize,
    /// The key it touched.
    pub key: String,
    /// What was asked.
    pub input: Input,
    /// What came back.
    pub output: Output,
    /// When it was called (any monotonic clock, e.g. nanoseconds).
    pub call: u64,
    /// When it returned; `None` if it never did (its output is then
    /// `Unknown`).
    pub ret: Option<u64>,
}

impl Operation {
    /// Whether the store may or may not have applied it.
    pub fn is_unknown(&self) -> bool {
        self.ret.is_none() || self.output == Output::Unknown
    }

    /// When it returned, as the search sees it: never, for an unknown one.
    pub(crate) fn end(&self) -> u64 {
        if self.is_unknown() {
            u64::MAX
        } else {
            self.ret.unwrap_or(u64::MAX)
        }
    }
}

fn value(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("∅")
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ret = match self.ret {
            Some(ret) => ret.to_string(),
            None => "?".into(),
        };
        write!(
            f,
            "client {} [{} .. {}] {} ",
            self.client, self.call, ret, self.key
        )?;
        match &self.input {
            Input::Get => write!(f, "get")?,
            Input::Put(v) => write!(f, "put {v}")?,
            Input::Delete => write!(f, "delete")?,
            Input::Cas { expect, new } => write!(f, "cas {} -> {}", value(expect), value(new))?,
        }
        match &self.output {
            Output::Value(v) => write!(f, " => {}", value(v)),
            Output::Done => write!(f, " => ok"),
            Output::Swapped(true) => write!(f, " => swapped"),
            Output::Swapped(false) => write!(f, " => not swapped"),
            Output::Unknown => write!(f, " => unknown"),
        }
    }
}
