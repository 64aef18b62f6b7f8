import DaptCore

/// The `cluster:` section: how ranks talk and how many BLAS threads each uses.
public struct ClusterConfig: StageConfig, Equatable {
    /// `tcp` or `ipc` for the ZeroMQ exchange.
    public var transport: String = "tcp"
    /// Address the exchange binds: an IP, an interface name, or `*`.
    public var interface: String = "127.0.0.1"
    /// 0: the system picks a free port per rank; otherwise base_port + rank.
    public var basePort: Int = 0
    /// Exchange messages are about this many bytes.
    public var batchBytes: Int = 256 << 10
    /// Messages queued per peer before a sender waits.
    public var highWaterMark: Int = 64
    /// A round fails after this long with nothing arriving.
    public var idleTimeoutSeconds: Double = 300
    /// Directory for `ipc` endpoints (Unix sockets).
    public var ipcDirectory: String = "/tmp"
    /// OpenBLAS threads per rank; 0: cores on this host ÷ ranks on this host.
    public var blasThreads: Int = 0

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case transport, interface
        case basePort = "base_port"
        case batchBytes = "batch_bytes"
        case highWaterMark = "high_water_mark"
        case idleTimeoutSeconds = "idle_timeout_seconds"
        case blasThreads = "blas_threads"
        case ipcDirectory = "ipc_directory"
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = ClusterConfig()
        transport = try c.value(.transport, default: d.transport)
        interface = try c.value(.interface, default: d.interface)
        basePort = try c.value(.basePort, default: d.basePort)
        batchBytes = try c.value(.batchBytes, default: d.batchBytes)
        highWaterMark = try c.value(.highWaterMark, default: d.highWaterMark)
        idleTimeoutSeconds = try c.value(.idleTimeoutSeconds, default: d.idleTimeoutSeconds)
        blasThreads = try c.value(.blasThreads, default: d.blasThreads)
        ipcDirectory = try c.value(.ipcDirectory, default: d.ipcDirectory)
    }

    public func validate() throws {
        try Check.oneOf(transport, ["tcp", "ipc"], "transport")
        if interface.isEmpty { throw ConfigError(field: "interface", reason: "must not be empty") }
        try Check.inRange(basePort, 0...65535, "base_port")
        try Check.inRange(batchBytes, 64...(64 << 20), "batch_bytes")
        try Check.positive(highWaterMark, "high_water_mark")
        try Check.positive(idleTimeoutSeconds, "idle_timeout_seconds")
        try Check.nonNegative(blasThreads, "blas_threads")
        if ipcDirectory.isEmpty || !FileSystem.isDirectory(ipcDirectory), transport == "ipc" {
            throw ConfigError(field: "ipc_directory", reason: "\"\(ipcDirectory)\" is not a directory")
        }
    }

    public var exchangeOptions: ExchangeOptions {
        var o = ExchangeOptions()
        o.batchBytes = batchBytes
        o.idleTimeoutSeconds = idleTimeoutSeconds
        return o
    }
}
