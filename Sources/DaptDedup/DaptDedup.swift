// The DaptDedup module: see the issue that builds it.
