// The DaptPrepare module: see the issue that builds it.
