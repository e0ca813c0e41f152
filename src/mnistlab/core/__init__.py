"""The ground floor, imported by every wing and importing none: errors, atomic file writes, the run folder's
file names and defaults, the frozen configuration types, and torch's thread settings."""
