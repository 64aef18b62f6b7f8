/// One thing a pipeline stage does during a step, for micro-batch numbers
/// of the step. Sends and receives go to the neighbouring stages: an
/// activation forward (to stage + 1), its gradient back (to stage − 1).
public enum PipelineAction: Equatable, Sendable, CustomStringConvertible {
    /// Receive micro-batch m's activation from the previous stage.
    case receiveActivation(Int)
    /// Run micro-batch m forward (on the last stage: through the loss and the head's backward).
    case forward(Int)
    /// Send micro-batch m's activation to the next stage.
    case sendActivation(Int)
    /// Receive ∂loss/∂activation of micro-batch m from the next stage.
    case receiveGradient(Int)
    /// Run micro-batch m backward through this stage's layers (and the embedding on the first).
    case backward(Int)
    /// Send ∂loss/∂input of micro-batch m to the previous stage.
    case sendGradient(Int)
    /// With the next stage at once: send activation `send`, receive the gradient of `receive`.
    case sendActivationReceiveGradient(send: Int, receive: Int)
    /// With the previous stage at once: send the gradient of `send`, receive activation `receive`.
    case sendGradientReceiveActivation(send: Int, receive: Int)

    public var description: String {
        switch self {
        case .receiveActivation(let m): return "recvA\(m)"
        case .forward(let m): return "F\(m)"
        case .sendActivation(let m): return "sendA\(m)"
        case .receiveGradient(let m): return "recvG\(m)"
        case .backward(let m): return "B\(m)"
        case .sendGradient(let m): return "sendG\(m)"
        case let .sendActivationReceiveGradient(s, r): return "sendA\(s)+recvG\(r)"
        case let .sendGradientReceiveActivation(s, r): return "sendG\(s)+recvA\(r)"
        }
    }
}

/// The one-forward-one-backward schedule (PipeDream-Flush, as Megatron-LM
/// runs it) of stage `stage` of `stages` for `microBatches` micro-batches:
/// P − stage − 1 warm-up forwards, then alternately one forward and one
/// backward, then the remaining backwards. A stage holds the activations of
/// at most P − stage micro-batches (forwarded, not yet backwarded), instead
/// of all of them. Each exchange of a steady step is one paired action, so
/// that blocking point-to-point messages between neighbours always meet.
public func oneForwardOneBackward(stage: Int, stages: Int, microBatches: Int) -> [PipelineAction] {
    precondition(stages >= 1 && (0..<stages).contains(stage) && microBatches >= 0)
    let first = stage == 0, last = stage == stages - 1
    let warmUp = min(stages - stage - 1, microBatches)
    let steady = microBatches - warmUp
    var actions: [PipelineAction] = []
    for m in 0..<warmUp {
        if !first { actions.append(.receiveActivation(m)) }
        actions.append(.forward(m))
        if !last { actions.append(.sendActivation(m)) }
    }
    if steady > 0 && !first { actions.append(.receiveActivation(warmUp)) }
    for i in 0..<steady {
        let forward = warmUp + i, backward = i
        actions.append(.forward(forward))
        if !last { actions.append(.sendActivationReceiveGradient(send: forward, receive: backward)) }
        actions.append(.backward(backward))
        // The first stage reads its next input from the data, not a neighbour.
        if !first {
            actions.append(i == steady - 1 ? .sendGradient(backward) : .sendGradientReceiveActivation(send: backward, receive: forward + 1))
        }
    }
    for m in steady..<microBatches {
        if !last { actions.append(.receiveGradient(m)) }
        actions.append(.backward(m))
        if !first { actions.append(.sendGradient(m)) }
    }
    return actions
}

/// The most micro-batches forwarded and not yet backwarded at once in `actions`.
public func peakHeldActivations(_ actions: [PipelineAction]) -> Int {
    var held = 0, peak = 0
    for a in actions {
        if case .forward = a { held += 1; peak = max(peak, held) }
        if case .backward = a { held -= 1 }
    }
    return peak
}
