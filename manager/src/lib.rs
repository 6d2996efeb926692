//! Canopy's web console (filled in by the console work).
