package consensus

import (
	"io"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
)

// transport is raft's transport: rpcServer answers the RPCs that reach
// this server, rpcClient makes the ones it sends, both in raft's
// NetworkTransport wire format (servers of earlier versions run
// NetworkTransport) and with buffers sized for what raft sends
// (rpcSendBuffer, rpcRecvBuffer) instead of NetworkTransport's 256 KB per
// connection, each held for as long as the connection lives. There is no
// pipeline (heartbeatThrottle.AppendEntriesPipeline).
type transport struct {
	local  raft.ServerAddress
	client *rpcClient
	server *rpcServer
}

var (
	_ raft.Transport   = (*transport)(nil)
	_ raft.WithClose   = (*transport)(nil)
	_ raft.WithPreVote = (*transport)(nil)
)

// newTransport serves the RPCs stream accepts and dials other servers
// through it; timeout is every RPC's I/O deadline.
func newTransport(stream raft.StreamLayer, timeout time.Duration, log *slog.Logger) *transport {
	return &transport{
		local:  raft.ServerAddress(stream.Addr().String()),
		client: newRPCClient(stream.Dial, timeout),
		server: newRPCServer(stream, log),
	}
}

// Consumer implements raft.Transport.
func (t *transport) Consumer() <-chan raft.RPC { return t.server.consume }

// LocalAddr implements raft.Transport.
func (t *transport) LocalAddr() raft.ServerAddress { return t.local }

// AppendEntriesPipeline implements raft.Transport: no pipeline.
func (t *transport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

// AppendEntries implements raft.Transport.
func (t *transport) AppendEntries(_ raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	return t.client.call(target, rpcAppendEntries, args, resp)
}

// RequestVote implements raft.Transport.
func (t *transport) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return t.client.call(target, rpcRequestVote, args, resp)
}

// RequestPreVote implements raft.WithPreVote.
func (t *transport) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return t.client.call(target, rpcRequestPreVote, args, resp)
}

// InstallSnapshot implements raft.Transport.
func (t *transport) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	return t.client.installSnapshot(target, args, resp, data)
}

// TimeoutNow implements raft.Transport.
func (t *transport) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return t.client.call(target, rpcTimeoutNow, args, resp)
}

// EncodePeer implements raft.Transport: addresses are peer ids.
func (t *transport) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte { return []byte(addr) }

// DecodePeer implements raft.Transport.
func (t *transport) DecodePeer(b []byte) raft.ServerAddress { return raft.ServerAddress(b) }

// SetHeartbeatHandler implements raft.Transport.
func (t *transport) SetHeartbeatHandler(fn func(raft.RPC)) { t.server.setHeartbeatHandler(fn) }

// Close implements raft.WithClose: the client's connections, then the
// listener and every connection it accepted.
func (t *transport) Close() error {
	t.client.close()
	return t.server.close()
}
