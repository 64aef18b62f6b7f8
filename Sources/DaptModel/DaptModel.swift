// The DaptModel module: see the issue that builds it.
