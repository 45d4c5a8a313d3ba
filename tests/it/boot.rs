//! Boot tests (being written).
