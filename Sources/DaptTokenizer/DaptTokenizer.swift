// The DaptTokenizer module: see the issue that builds it.
