// Package spinconn makes a TCP connection's reads poll for data for a
// short while before they sleep.
//
// A tensor-parallel group exchanges a hidden state with its peers twice
// per layer, tens of times per token, and each side waits a few hundred
// microseconds for the other. A read that sleeps in the network poller
// leaves its CPU idle, and waking it again is slow on virtual machines
// (an idle vCPU halts, and the wake-up goes through the hypervisor):
// measured on the project's 2-vCPU VM, two goroutines that compute 280 µs
// and then exchange 8 KiB took 590 µs per round when the reads slept and
// 310 µs when they polled. Polling is what llama.cpp's thread pool and
// distributed inference engines do between their ops for the same reason.
//
// Wrap returns a connection whose Read first polls the socket without
// blocking for up to the spin time (yielding the processor to other
// goroutines between polls), then waits in the poller as usual. Deadlines
// and Close work as on the wrapped connection during both phases.
package spinconn

import (
	"net"
	"time"
)

// DefaultSpin is how long a read polls before it sleeps: longer than the
// waits of an exchange within a forward pass (one side's share of a
// layer's compute, a LAN's round trip), short enough that an idle
// connection costs a millisecond of CPU per read and then nothing.
const DefaultSpin = time.Millisecond

// pollsPerCheck is how many polls run between clock reads and yields.
const pollsPerCheck = 16

// Wrap returns c with reads that poll for up to spin before they sleep,
// when c is a TCP connection on a platform that supports it and spin > 0;
// otherwise c unchanged. The result is safe for the same concurrent use as
// c (one reader at a time, as for any net.Conn read loop).
func Wrap(c net.Conn, spin time.Duration) net.Conn {
	if spin <= 0 {
		return c
	}
	return wrap(c, spin)
}
