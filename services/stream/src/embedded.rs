//! The embedded backend: checksummed, fsynced segment files on local disk (to be written).
