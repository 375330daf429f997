//! domain (being written)
