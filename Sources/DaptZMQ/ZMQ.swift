import CZeroMQ
import DaptCluster
import DaptCore
#if canImport(Glibc)
import Glibc
#endif

/// A ZeroMQ call that failed, with zmq_strerror's text.
public struct ZMQError: Error, CustomStringConvertible, Equatable {
    public var function: String
    public var errno: Int32
    public var message: String
    public var description: String { "\(function) failed: \(message) (errno \(errno))" }

    static func last(_ function: String) -> ZMQError {
        let e = dapt_zmq_errno()
        return ZMQError(function: function, errno: e, message: String(cString: zmq_strerror(e)))
    }
}

@inline(__always)
func checked(_ function: String, _ body: () -> Int32) throws {
    if body() == -1 { throw ZMQError.last(function) }
}

/// Owns one ZeroMQ context; terminated once, after its sockets closed.
public final class ZMQContext {
    fileprivate let handle: UnsafeMutableRawPointer

    public init(ioThreads: Int = 1) throws {
        guard let h = zmq_ctx_new() else { throw ZMQError.last("zmq_ctx_new") }
        handle = h
        try checked("zmq_ctx_set") { zmq_ctx_set(h, ZMQ_IO_THREADS, Int32(ioThreads)) }
    }

    deinit { _ = zmq_ctx_term(handle) }

    public static var version: String {
        var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        return "\(major).\(minor).\(patch)"
    }
}

/// Owns one ZeroMQ socket; closed once. Keeps its context alive.
public final class ZMQSocket {
    public enum Kind { case push, pull }

    private let context: ZMQContext
    private let handle: UnsafeMutableRawPointer

    public init(context: ZMQContext, kind: Kind) throws {
        guard let h = zmq_socket(context.handle, kind == .push ? ZMQ_PUSH : ZMQ_PULL) else {
            throw ZMQError.last("zmq_socket")
        }
        self.context = context
        handle = h
    }

    deinit { _ = zmq_close(handle) }

    public func setOption(_ option: Int32, _ value: Int32, name: String) throws {
        var v = value
        try checked("zmq_setsockopt(\(name))") { zmq_setsockopt(handle, option, &v, MemoryLayout<Int32>.size) }
    }

    public func setOption(_ option: Int32, _ value: Int64, name: String) throws {
        var v = value
        try checked("zmq_setsockopt(\(name))") { zmq_setsockopt(handle, option, &v, MemoryLayout<Int64>.size) }
    }

    public func bind(_ endpoint: String) throws {
        try checked("zmq_bind(\(endpoint))") { zmq_bind(handle, endpoint) }
    }

    public func connect(_ endpoint: String) throws {
        try checked("zmq_connect(\(endpoint))") { zmq_connect(handle, endpoint) }
    }

    /// The endpoint actually bound (with the port the system chose for `*`).
    public func lastEndpoint() throws -> String {
        var buffer = [CChar](repeating: 0, count: 512)
        var size = buffer.count
        try checked("zmq_getsockopt(ZMQ_LAST_ENDPOINT)") { zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size) }
        return String(nulTerminated: buffer)
    }

    /// Sends without blocking; false when the queue is full (EAGAIN).
    public func trySend(_ bytes: [UInt8]) throws -> Bool {
        while true {
            let rc = bytes.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, ZMQ_DONTWAIT) }
            if rc >= 0 { return true }
            let e = dapt_zmq_errno()
            if e == dapt_eagain() { return false }
            if e == dapt_eintr() { continue }
            throw ZMQError.last("zmq_send")
        }
    }

    /// Waits up to `timeoutMilliseconds` for a message and returns it.
    public func receive(timeoutMilliseconds: Int) throws -> [UInt8]? {
        var item = zmq_pollitem_t(socket: handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)
        let ready = zmq_poll(&item, 1, timeoutMilliseconds)
        if ready < 0 {
            if dapt_zmq_errno() == dapt_eintr() { return nil }
            throw ZMQError.last("zmq_poll")
        }
        if ready == 0 { return nil }
        var message = zmq_msg_t()
        try checked("zmq_msg_init") { zmq_msg_init(&message) }
        defer { zmq_msg_close(&message) }
        let rc = zmq_msg_recv(&message, handle, ZMQ_DONTWAIT)
        if rc < 0 {
            let e = dapt_zmq_errno()
            if e == dapt_eagain() || e == dapt_eintr() { return nil }
            throw ZMQError.last("zmq_msg_recv")
        }
        let size = zmq_msg_size(&message)
        guard size > 0, let data = zmq_msg_data(&message) else { return [] }
        return Array(UnsafeRawBufferPointer(start: data, count: size))
    }
}

/// Where the exchange listens, and how hard it may queue.
public struct ZMQTransportOptions: Sendable, Equatable {
    /// `tcp` on `interface`, or `ipc` (Unix sockets, one host only).
    public enum Scheme: String, Sendable, Codable { case tcp, ipc }
    public var scheme: Scheme = .tcp
    /// The address to bind: an IP, an interface name, or `*` for all (then
    /// peers are told this host's name).
    public var interface: String = "127.0.0.1"
    /// 0 lets the system choose; otherwise `basePort + rank`.
    public var basePort: Int = 0
    /// Messages queued per peer before a sender blocks (backpressure).
    public var highWaterMark: Int = 64
    /// Largest message accepted from the network, in bytes.
    public var maxMessageBytes: Int = 64 << 20
    /// How long close() may wait to flush queued messages, in ms.
    public var lingerMilliseconds: Int = 2000
    /// Directory for `ipc` endpoints.
    public var ipcDirectory: String = "/tmp"
    public init() {}
}

/// The exchange's ZeroMQ transport: one PULL socket bound per rank, one PUSH
/// socket per peer. Endpoints are shared with an all-gather on `communicator`.
public final class ZMQTransport: FrameTransport {
    public let rank: Int
    public let size: Int
    public let endpoint: String
    public let peerEndpoints: [String]
    private let context: ZMQContext
    private let inbox: ZMQSocket
    private var outboxes: [ZMQSocket?]

    public init(communicator: any Communicator, options: ZMQTransportOptions = ZMQTransportOptions(), jobTag: String = "dapt") throws {
        rank = communicator.rank
        size = communicator.size
        context = try ZMQContext()
        inbox = try ZMQSocket(context: context, kind: .pull)
        try inbox.setOption(ZMQ_RCVHWM, Int32(options.highWaterMark), name: "ZMQ_RCVHWM")
        try inbox.setOption(ZMQ_MAXMSGSIZE, Int64(options.maxMessageBytes), name: "ZMQ_MAXMSGSIZE")
        try inbox.setOption(ZMQ_LINGER, Int32(options.lingerMilliseconds), name: "ZMQ_LINGER")
        let bindEndpoint: String
        switch options.scheme {
        case .tcp:
            let port = options.basePort == 0 ? "*" : String(options.basePort + rank)
            bindEndpoint = "tcp://\(options.interface):\(port)"
        case .ipc:
            bindEndpoint = "ipc://\(options.ipcDirectory)/\(jobTag)-\(communicator.hostName)-\(rank).sock"
        }
        try inbox.bind(bindEndpoint)
        var bound = try inbox.lastEndpoint()
        if options.scheme == .tcp, bound.hasPrefix("tcp://0.0.0.0:") {
            // Bound on every interface: tell peers a name they can reach.
            bound = "tcp://\(communicator.hostName):" + bound.split(separator: ":").last!
        }
        endpoint = bound
        peerEndpoints = try communicator.allGather(bound)
        outboxes = []
        for peer in 0..<size {
            guard peer != rank else { outboxes.append(nil); continue }
            let socket = try ZMQSocket(context: context, kind: .push)
            try socket.setOption(ZMQ_SNDHWM, Int32(options.highWaterMark), name: "ZMQ_SNDHWM")
            try socket.setOption(ZMQ_LINGER, Int32(options.lingerMilliseconds), name: "ZMQ_LINGER")
            try socket.connect(peerEndpoints[peer])
            outboxes.append(socket)
        }
    }

    public func trySend(_ frame: [UInt8], to peer: Int) throws -> Bool {
        guard peer >= 0, peer < size, let socket = outboxes[peer] else {
            throw ExchangeError.transport("no socket to rank \(peer)")
        }
        return try socket.trySend(frame)
    }

    public func receive(timeoutMilliseconds: Int) throws -> [UInt8]? {
        try inbox.receive(timeoutMilliseconds: timeoutMilliseconds)
    }

    /// Closes sockets before the context (ZeroMQ's required order) and
    /// removes this rank's ipc socket file.
    deinit {
        outboxes.removeAll()
        if endpoint.hasPrefix("ipc://") { unlink(String(endpoint.dropFirst("ipc://".count))) }
    }
}
