import DaptTrain
import XCTest

/// The 1F1B schedule as a pure function: its order, the activations a
/// stage holds, and that blocking messages between neighbours always meet.
final class PipelineScheduleTests: XCTestCase {
    func testFourStagesFollowOneForwardOneBackward() {
        let s = { (stage: Int) in oneForwardOneBackward(stage: stage, stages: 4, microBatches: 6).map(\.description).joined(separator: " ") }
        XCTAssertEqual(s(0), "F0 sendA0 F1 sendA1 F2 sendA2 F3 sendA3+recvG0 B0 F4 sendA4+recvG1 B1 F5 sendA5+recvG2 B2 recvG3 B3 recvG4 B4 recvG5 B5")
        XCTAssertEqual(s(2), "recvA0 F0 sendA0 recvA1 F1 sendA1+recvG0 B0 sendG0+recvA2 F2 sendA2+recvG1 B1 sendG1+recvA3 F3 sendA3+recvG2 B2 sendG2+recvA4 F4 sendA4+recvG3 B3 sendG3+recvA5 F5 sendA5+recvG4 B4 sendG4 recvG5 B5 sendG5")
        XCTAssertEqual(s(3), "recvA0 F0 B0 sendG0+recvA1 F1 B1 sendG1+recvA2 F2 B2 sendG2+recvA3 F3 B3 sendG3+recvA4 F4 B4 sendG4+recvA5 F5 B5 sendG5")
        XCTAssertEqual(oneForwardOneBackward(stage: 0, stages: 1, microBatches: 2), [.forward(0), .backward(0), .forward(1), .backward(1)],
                       "one stage: forward and backward in turn")
    }

    /// Every stage forwards and backwards each micro-batch once, forward
    /// first, backward in order; it holds at most P − stage micro-batches
    /// (never more than P), including when there are fewer micro-batches than stages.
    func testEveryMicroBatchOnceAndAtMostPHeld() {
        for stages in 1...5 {
            for micro in [1, 2, stages, stages + 3] {
                for stage in 0..<stages {
                    let actions = oneForwardOneBackward(stage: stage, stages: stages, microBatches: micro)
                    let forwards = actions.compactMap { if case .forward(let m) = $0 { return m } else { return nil } }
                    let backwards = actions.compactMap { if case .backward(let m) = $0 { return m } else { return nil } }
                    XCTAssertEqual(forwards, Array(0..<micro))
                    XCTAssertEqual(backwards, Array(0..<micro))
                    for m in 0..<micro {
                        XCTAssertLessThan(actions.firstIndex(of: .forward(m))!, actions.firstIndex(of: .backward(m))!)
                    }
                    XCTAssertEqual(peakHeldActivations(actions), min(stages - stage, micro), "P \(stages) stage \(stage) M \(micro)")
                    XCTAssertLessThanOrEqual(peakHeldActivations(actions), stages)
                }
            }
        }
    }

    /// The stages run their actions with blocking messages (a send completes
    /// only when the neighbour takes it; a paired exchange sends first on an
    /// even stage and receives first on an odd one, as the trainer runs it):
    /// every run finishes, and every message meets the one it should.
    func testBlockingMessagesAlwaysMeet() {
        enum Step: Equatable { case compute, send(to: Int, what: String), receive(from: Int, what: String) }
        for stages in 1...5 {
            for micro in [1, 2, stages, 2 * stages + 1] {
                let programs: [[Step]] = (0..<stages).map { s in
                    oneForwardOneBackward(stage: s, stages: stages, microBatches: micro).flatMap { a -> [Step] in
                        let sendA = { (m: Int) in Step.send(to: s + 1, what: "A\(m)") }, recvA = { (m: Int) in Step.receive(from: s - 1, what: "A\(m)") }
                        let sendG = { (m: Int) in Step.send(to: s - 1, what: "G\(m)") }, recvG = { (m: Int) in Step.receive(from: s + 1, what: "G\(m)") }
                        switch a {
                        case .forward, .backward: return [.compute]
                        case .sendActivation(let m): return [sendA(m)]
                        case .receiveActivation(let m): return [recvA(m)]
                        case .sendGradient(let m): return [sendG(m)]
                        case .receiveGradient(let m): return [recvG(m)]
                        case let .sendActivationReceiveGradient(x, y): return s % 2 == 0 ? [sendA(x), recvG(y)] : [recvG(y), sendA(x)]
                        case let .sendGradientReceiveActivation(x, y): return s % 2 == 0 ? [sendG(x), recvA(y)] : [recvA(y), sendG(x)]
                        }
                    }
                }
                var position = [Int](repeating: 0, count: stages)
                var progressed = true
                while progressed {
                    progressed = false
                    for s in 0..<stages where position[s] < programs[s].count {
                        switch programs[s][position[s]] {
                        case .compute:
                            position[s] += 1; progressed = true
                        case let .send(peer, what):
                            // A rendezvous: the peer must be at the matching receive.
                            if position[peer] < programs[peer].count, programs[peer][position[peer]] == .receive(from: s, what: what) {
                                position[s] += 1; position[peer] += 1; progressed = true
                            }
                        case .receive:
                            break
                        }
                    }
                }
                XCTAssertEqual(position, programs.map(\.count), "P \(stages) M \(micro): stuck at \(position)")
            }
        }
    }
}
