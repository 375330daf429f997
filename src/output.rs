//! output (being written)
