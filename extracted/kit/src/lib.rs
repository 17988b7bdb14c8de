//! Shared kit for extracted services (filled in by the extracted-services work).
