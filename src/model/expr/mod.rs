//! Expression syntax: the abstract syntax tree and its parser.

pub mod ast;
pub mod parser;
