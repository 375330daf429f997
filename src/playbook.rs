//! playbook (being written)
