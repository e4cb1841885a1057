package node

import (
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/rbee-project/rbee/node/blob"
	"github.com/rbee-project/rbee/node/shardlink"
	"github.com/rbee-project/rbee/p2p"
)

// Resource-manager accounting of the node's libp2p protocols: every stream
// joins its protocol's service and reserves the buffers it keeps for its
// life (see p2p.Service). Frames bigger than a read chunk are allocated as
// their bytes arrive and are not reserved.
const (
	// frameChunk is what p2p.ReadFrame allocates up front for a frame.
	frameChunk = 64 << 10
	// raftConnMemory: consensus's raft transport buffers each connection
	// with 16 KiB (its rpcRecvBuffer on the accepting side, rpcSendBuffer
	// on the dialing side) plus a 4 KiB bufio the other way. (Servers of
	// earlier versions, hashicorp/raft's NetworkTransport, used 256 KiB;
	// their buffers are on their side.)
	raftConnMemory = 16<<10 + 4<<10
)

// p2pServices declares one service per protocol of the node. Raft and the
// info probe are control traffic and always get their memory; inference
// and jobs may fill their scopes to 80 %, bulk copies to 60 %, so bulk
// traffic cannot starve them.
func p2pServices() []p2p.Service {
	return []p2p.Service{
		{Name: "rbee.raft", Protocol: protoRaft, Memory: raftConnMemory},
		{Name: "rbee.raft-forward", Protocol: protoForward, Memory: frameChunk},
		{Name: "rbee.info", Protocol: protoInfo, Memory: maxInfoFrame},
		{Name: "rbee.job", Protocol: protoJob, Memory: frameChunk, Priority: network.ReservationPriorityHigh},
		{Name: "rbee.job-1.1", Protocol: protoJobStrict, Memory: frameChunk, Priority: network.ReservationPriorityHigh},
		// The serving side's pump buffer, and the frame the other side reads.
		{Name: "rbee.worker-http", Protocol: protoWorkerHTTP, Memory: 2 * bodyChunk, Priority: network.ReservationPriorityHigh},
		{Name: "rbee.worker-http-1.1", Protocol: protoWorkerHTTP11, Memory: 2 * bodyChunk, Priority: network.ReservationPriorityHigh},
		{Name: "rbee.blob", Protocol: blob.Protocol, Memory: blob.Chunk, Priority: network.ReservationPriorityMedium},
		// A stage link's copy buffers, both ways.
		{Name: "rbee.shard-link", Protocol: shardlink.Protocol, Memory: shardlink.Memory, Priority: network.ReservationPriorityHigh},
	}
}

// declareP2PServices registers the node's services on its host, before
// any stream of them can be opened or accepted.
func declareP2PServices(h *p2p.Host) error {
	for _, svc := range p2pServices() {
		if err := h.AddService(svc); err != nil {
			return err
		}
	}
	return nil
}
