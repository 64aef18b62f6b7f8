// ZeroMQ's C API imports as is; this header only gathers it. No pkg-config:
// its flags carry -isystem, which SwiftPM rejects.
#ifndef DAPT_CZEROMQ_SHIM_H
#define DAPT_CZEROMQ_SHIM_H
#include <zmq.h>
#include <errno.h>

static inline int dapt_zmq_errno(void) { return zmq_errno(); }
static inline int dapt_eagain(void) { return EAGAIN; }
static inline int dapt_eintr(void) { return EINTR; }
#endif
