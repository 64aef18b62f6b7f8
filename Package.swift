// swift-tools-version: 6.0
import PackageDescription

// Hot numeric code is optimised even in debug/test builds: an unoptimised
// kernel is 10-100x slower and would make the test suite crawl.
let optimised: [SwiftSetting] = [.unsafeFlags(["-O"])]

// The model's element-wise kernels (SIMD8<Float>: RMSNorm, RoPE, maxima,
// and DaptKernels' exponential, SwiGLU and softmax rows) compile to 256-bit
// AVX2 instead of two SSE halves on x86-64; the binary then needs an AVX2
// CPU (x86-64 since 2013).
#if arch(x86_64)
let kernels: [SwiftSetting] = [.unsafeFlags(["-O", "-target-cpu", "haswell"])]
// The second build of the exponential kernels (DaptKernelsWide): 512-bit
// AVX-512, run only where the CPU has it (DaptModel checks on first use).
let wideKernels: [SwiftSetting] = [.unsafeFlags(["-O", "-target-cpu", "skylake-avx512"])]
#else
let kernels = optimised
let wideKernels = optimised
#endif

let package = Package(
    name: "dapt",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "dapt", targets: ["dapt"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // C modules: a module map and a tiny shim header each.
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(name: "CZeroMQ", providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),

        // Thin Swift wrappers: each is the only importer of its C module.
        .target(name: "DaptMPI", dependencies: ["CMPI", "DaptCluster"]),
        .target(name: "DaptZMQ", dependencies: ["CZeroMQ", "DaptCluster"], swiftSettings: optimised),
        .target(name: "DaptBLAS", dependencies: ["COpenBLAS", "DaptCore"], swiftSettings: optimised),

        // Pure-Swift cores.
        .target(name: "DaptCore", dependencies: [.product(name: "Yams", package: "Yams")], swiftSettings: optimised),
        .target(name: "DaptCluster", dependencies: ["DaptCore"], swiftSettings: optimised),
        .target(name: "DaptPrepare", dependencies: ["DaptCore", "DaptCluster"], swiftSettings: optimised),
        .target(name: "DaptDedup", dependencies: ["DaptCore", "DaptCluster"], swiftSettings: optimised + [.unsafeFlags(["-Xcc", "-mavx2"], .when(platforms: [.linux]))]),
        .target(name: "DaptTokenizer", dependencies: ["DaptCore", "DaptCluster"], swiftSettings: optimised),
        // The exponential kernels, one source built at two vector widths
        // (DaptKernelsWide's file is a link to DaptKernels'); DaptModel
        // calls the one this CPU runs best.
        .target(name: "DaptKernels", swiftSettings: kernels),
        .target(name: "DaptKernelsWide", swiftSettings: wideKernels),
        .target(name: "DaptModel", dependencies: ["DaptCore", "DaptBLAS", "DaptCluster", "DaptKernels", "DaptKernelsWide"], swiftSettings: kernels),
        .target(name: "DaptTrain", dependencies: ["DaptBLAS", "DaptCore", "DaptCluster", "DaptModel", "DaptTokenizer"], swiftSettings: optimised),
        .target(name: "DaptGenerate", dependencies: ["DaptCore", "DaptCluster", "DaptModel", "DaptTokenizer", "DaptTrain", "DaptGrammar"], swiftSettings: optimised),
        .target(name: "DaptGrammar", dependencies: ["DaptCore", "DaptTokenizer"], swiftSettings: optimised),
        .target(name: "DaptFilter", dependencies: ["DaptBLAS", "DaptCore", "DaptCluster", "DaptModel", "DaptTokenizer", "DaptTrain"], swiftSettings: optimised),
        // The run report: every stage's outputs on one page and one screen.
        .target(name: "DaptReport", dependencies: ["DaptCore", "DaptTrain", "DaptFilter"]),

        // The command line: one subcommand per file, parsing and calling the libraries.
        .executableTarget(name: "dapt", dependencies: [
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Yams", package: "Yams"),
            "DaptCore", "DaptCluster", "DaptMPI", "DaptZMQ", "DaptBLAS",
            "DaptPrepare", "DaptDedup", "DaptTokenizer", "DaptModel", "DaptTrain", "DaptFilter", "DaptGenerate", "DaptReport", "DaptGrammar",
        ]),

        // Helpers shared by the test targets (temporary directories, fixture files).
        .target(name: "DaptTestSupport", dependencies: ["DaptCluster"], path: "Tests/DaptTestSupport"),
        .testTarget(name: "DaptCoreTests", dependencies: ["DaptCore", "DaptTestSupport"]),
        .testTarget(name: "DaptClusterTests", dependencies: ["DaptTestSupport", "DaptCluster", "DaptZMQ", "DaptCore"]),
        .testTarget(name: "DaptBLASTests", dependencies: ["DaptTestSupport", "DaptBLAS"]),
        .testTarget(name: "DaptPrepareTests", dependencies: ["DaptTestSupport", "DaptPrepare", "DaptCore", "DaptCluster"], resources: [.copy("Fixtures")]),
        .testTarget(name: "DaptDedupTests", dependencies: ["DaptTestSupport", "DaptDedup", "DaptCore", "DaptCluster"], resources: [.copy("Fixtures")]),
        .testTarget(name: "DaptTokenizerTests", dependencies: ["DaptTestSupport", "DaptTokenizer", "DaptCore", "DaptCluster"], resources: [.copy("Fixtures")]),
        .testTarget(name: "DaptModelTests", dependencies: ["DaptTestSupport", "DaptModel", "DaptKernels", "DaptKernelsWide", "DaptCore", "DaptBLAS", "DaptCluster"], resources: [.copy("Fixtures")]),
        .testTarget(name: "DaptTrainTests", dependencies: ["DaptTestSupport", "DaptTrain", "DaptModel", "DaptTokenizer", "DaptCluster", "DaptCore"], resources: [.copy("Fixtures")]),
        .testTarget(name: "DaptFilterTests", dependencies: ["DaptTestSupport", "DaptFilter", "DaptModel", "DaptTokenizer", "DaptTrain", "DaptCluster", "DaptCore"], resources: [.copy("Fixtures")]),
        .testTarget(name: "DaptGenerateTests", dependencies: ["DaptTestSupport", "DaptGenerate", "DaptGrammar", "DaptModel", "DaptTokenizer", "DaptTrain", "DaptCore"], resources: [.copy("Fixtures")]),
        .testTarget(name: "DaptReportTests", dependencies: ["DaptTestSupport", "DaptReport", "DaptTrain", "DaptCore"]),
        .testTarget(name: "DaptGrammarTests", dependencies: ["DaptTestSupport", "DaptGrammar", "DaptTokenizer", "DaptCore"], resources: [.copy("Fixtures")]),
        // Starts real `mpirun` processes on the built `dapt` binary.
        .testTarget(name: "MultiRankTests", dependencies: ["DaptTestSupport", "DaptCore", "DaptModel"]),
    ]
)
