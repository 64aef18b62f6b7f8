// The DaptTrain module: see the issue that builds it.
