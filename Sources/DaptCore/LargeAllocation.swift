#if canImport(Glibc)
import Glibc
#endif

/// Memory for numeric buffers (parameters, gradients, collective buffers,
/// activations and kernel scratch, the sgemm replay's operands). Below
/// 2 MiB it starts on a cache line (64 bytes); from 2 MiB up it is aligned
/// to 2 MiB and advised as transparent huge pages (`MADV_HUGEPAGE`), as
/// NumPy does for its arrays:
/// where the kernel gives huge pages only on request (`madvise` mode, the
/// Debian default), Open MPI's shared-memory copies of a 16 MiB all-reduce
/// take about half the time on huge pages (BENCHMARKS.md, "Cluster runtime").
public enum LargeAllocation {
    public static let hugePageBytes = 2 << 20

    /// `count` uninitialised elements; free them with `deallocate`.
    public static func allocate<T>(_ type: T.Type, count: Int, hugePages: Bool = true) -> UnsafeMutableBufferPointer<T> {
        let bytes = max(count, 1) * MemoryLayout<T>.stride
        let huge = hugePages && bytes >= hugePageBytes
        let alignment = huge ? hugePageBytes : max(64, MemoryLayout<T>.alignment)
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, alignment, bytes) == 0, let raw else { fatalError("cannot allocate \(bytes) bytes") }
        // Advice only: without it the buffer is the same, on small pages.
        if huge { _ = madvise(raw, bytes, MADV_HUGEPAGE) }
        return UnsafeMutableBufferPointer(start: raw.bindMemory(to: T.self, capacity: max(count, 1)), count: count)
    }

    /// `count` elements set to `value`.
    public static func allocate<T>(repeating value: T, count: Int, hugePages: Bool = true) -> UnsafeMutableBufferPointer<T> {
        let buffer = allocate(T.self, count: count, hugePages: hugePages)
        buffer.initialize(repeating: value)
        return buffer
    }

    public static func deallocate<T>(_ buffer: UnsafeMutableBufferPointer<T>) {
        free(buffer.baseAddress)
    }
}
