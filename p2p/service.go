package p2p

import (
	"fmt"
	"runtime/debug"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Service places the streams of one protocol in libp2p's resource manager,
// as go-libp2p's own protocols do (identify, ping, relay): every stream of
// Protocol, inbound or outbound, is attached to the service scope Name
// (limited by the manager's service and service-peer limits) and reserves
// Memory bytes for the buffers it holds. The reservation is returned when
// the stream is closed or reset; a stream that cannot get it is reset
// (inbound) or not returned (outbound, the error wraps
// network.ErrResourceLimitExceeded).
type Service struct {
	// Name is the resource manager's service name, e.g. "rbee.job".
	Name string
	// Protocol is the versioned protocol id, e.g. "/rbee/job/1.0.0".
	Protocol protocol.ID
	// Memory is what one stream keeps allocated for its whole life: copy
	// and relay buffers and one frame-read chunk. Frames larger than that,
	// which ReadFrame grows as their bytes arrive, are transient and not
	// reserved.
	Memory int
	// Priority is the reservation priority (network.ReservationPriority*):
	// how full the scope may already be for the reservation to succeed.
	// Zero means network.ReservationPriorityAlways.
	Priority uint8
}

// pingService is the resource-manager service of ProtocolPing: two
// pingSize buffers, always granted (a probe must not starve).
func pingService() Service {
	return Service{Name: "rbee.ping", Protocol: ProtocolPing, Memory: 2 * pingSize}
}

// AddService declares svc for its protocol on this host, replacing an
// earlier declaration. Declare a protocol before its first stream: Handle,
// Listen, NewStream and Dial refuse protocols without a service
// (ErrNoService), so no stream escapes the resource manager.
func (h *Host) AddService(svc Service) error {
	if svc.Name == "" || svc.Protocol == "" || svc.Memory < 0 {
		return fmt.Errorf("%w: name %q, protocol %q, memory %d", ErrBadService, svc.Name, svc.Protocol, svc.Memory)
	}
	if svc.Priority == 0 {
		svc.Priority = network.ReservationPriorityAlways
	}
	h.svcMu.Lock()
	defer h.svcMu.Unlock()
	h.services[svc.Protocol] = svc
	return nil
}

// Service returns the service declared for proto.
func (h *Host) Service(proto protocol.ID) (Service, bool) {
	h.svcMu.RLock()
	defer h.svcMu.RUnlock()
	svc, ok := h.services[proto]
	return svc, ok
}

// attach puts stream s of protocol proto in its service's scope and
// reserves the service's memory.
func (h *Host) attach(s network.Stream, proto protocol.ID) error {
	svc, ok := h.Service(proto)
	if !ok {
		return fmt.Errorf("%w: %s", ErrNoService, proto)
	}
	sc := s.Scope()
	if err := sc.SetService(svc.Name); err != nil {
		return fmt.Errorf("p2p: %s stream: service %s: %w", proto, svc.Name, err)
	}
	if svc.Memory > 0 {
		if err := sc.ReserveMemory(svc.Memory, svc.Priority); err != nil {
			return fmt.Errorf("p2p: %s stream: reserve %d bytes: %w", proto, svc.Memory, err)
		}
	}
	return nil
}

// attached wraps an inbound stream handler: the stream is attached to its
// service first, and reset without calling fn when that fails.
func (h *Host) attached(proto protocol.ID, fn func(network.Stream)) func(network.Stream) {
	return func(s network.Stream) {
		// libp2p runs handlers without recovering: a handler's panic
		// would end the process. It resets this stream instead.
		defer func() {
			if r := recover(); r != nil {
				h.log.Error("stream handler panicked", "protocol", proto, "peer", s.Conn().RemotePeer(), "panic", r, "stack", string(debug.Stack()))
				_ = s.Reset()
			}
		}()
		if err := h.attach(s, proto); err != nil {
			h.log.Warn("refusing inbound stream", "protocol", proto, "peer", s.Conn().RemotePeer(), "err", err)
			_ = s.Reset()
			return
		}
		fn(s)
	}
}
