//! dns (being written)
