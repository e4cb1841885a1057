package consensus

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// rpcRecvBuffer is the read buffer of one accepted raft connection.
// hashicorp/raft's NetworkTransport gives each 256 KB (a constant), and a
// voter keeps the leader's connection for as long as it follows it (the
// heartbeats never let it go idle). 16 KB holds a heartbeat or a small
// append whole; a larger one, or a snapshot, is read through it in
// pieces.
const rpcRecvBuffer = 16 << 10

// rpcServer serves the raft RPCs that reach this server, in raft's
// NetworkTransport wire format, so that servers of this version and of
// earlier ones (NetworkTransport's client) reach it, with buffers sized
// for what they carry (rpcRecvBuffer). Each accepted connection is served
// by one goroutine, one RPC at a time, as NetworkTransport does:
// heartbeats go to the handler raft set (SetHeartbeatHandler) when
// there is one, everything else to Consumer, and the answer goes back on
// the same connection. Close stops accepting, ends every connection and
// waits for their goroutines. Safe for concurrent use.
type rpcServer struct {
	ln  net.Listener
	log *slog.Logger
	enc *codec.MsgpackHandle
	dec *codec.MsgpackHandle

	consume  chan raft.RPC
	shutdown chan struct{}
	wg       sync.WaitGroup

	mu        sync.Mutex
	heartbeat func(raft.RPC)
	conns     map[net.Conn]struct{}
	closed    bool
}

func newRPCServer(ln net.Listener, log *slog.Logger) *rpcServer {
	s := &rpcServer{ln: ln, log: log,
		enc:     &codec.MsgpackHandle{BasicHandle: codec.BasicHandle{TimeNotBuiltin: true}}, // as rpcClient's
		dec:     &codec.MsgpackHandle{},
		consume: make(chan raft.RPC), shutdown: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s
}

// accept serves every connection the listener accepts until Close; a
// failing Accept is retried after 5 ms, doubling to 1 s.
func (s *rpcServer) accept() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.shutdown:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				s.log.Warn("raft listener closed")
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept raft connection", "err", err)
			t := time.NewTimer(delay)
			select {
			case <-s.shutdown:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = conn.Close()
			return
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(conn)
	}
}

// serve answers the RPCs on conn until it ends.
func (s *rpcServer) serve(conn net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		_ = conn.Close()
	}()
	r := bufio.NewReaderSize(conn, rpcRecvBuffer)
	w := bufio.NewWriter(conn) // answers are a few dozen bytes
	dec := codec.NewDecoder(r, s.dec)
	enc := codec.NewEncoder(w, s.enc)
	for {
		if err := s.serveOne(r, dec, enc); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, raft.ErrTransportShutdown) && !errors.Is(err, net.ErrClosed) {
				// A request this server could not read (a peer that died
				// mid-request, or one speaking another format): as
				// NetworkTransport, it is worth a line.
				s.log.Warn("raft connection ended", "remote", conn.RemoteAddr().String(), "err", err)
			}
			return
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}

// serveOne reads one RPC, hands it to raft and writes raft's answer.
func (s *rpcServer) serveOne(r *bufio.Reader, dec *codec.Decoder, enc *codec.Encoder) error {
	rpcType, err := r.ReadByte()
	if err != nil {
		return err
	}
	respCh := make(chan raft.RPCResponse, 1)
	rpc := raft.RPC{RespChan: respCh}
	heartbeat := false
	switch rpcType {
	case rpcAppendEntries:
		var req raft.AppendEntriesRequest
		if err := dec.Decode(&req); err != nil {
			return err
		}
		rpc.Command = &req
		leader := req.Addr
		if len(leader) == 0 {
			leader = req.Leader // raft servers of earlier versions set only this
		}
		// NetworkTransport's test for raft's heartbeat fast path.
		heartbeat = req.Term != 0 && leader != nil && req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
			len(req.Entries) == 0 && req.LeaderCommitIndex == 0
	case rpcRequestVote:
		var req raft.RequestVoteRequest
		if err := dec.Decode(&req); err != nil {
			return err
		}
		rpc.Command = &req
	case rpcRequestPreVote:
		var req raft.RequestPreVoteRequest
		if err := dec.Decode(&req); err != nil {
			return err
		}
		rpc.Command = &req
	case rpcInstallSnapshot:
		var req raft.InstallSnapshotRequest
		if err := dec.Decode(&req); err != nil {
			return err
		}
		rpc.Command = &req
		rpc.Reader = io.LimitReader(r, req.Size)
	case rpcTimeoutNow:
		var req raft.TimeoutNowRequest
		if err := dec.Decode(&req); err != nil {
			return err
		}
		rpc.Command = &req
	default:
		return fmt.Errorf("unknown raft rpc type %d", rpcType)
	}
	var fn func(raft.RPC)
	if heartbeat {
		s.mu.Lock()
		fn = s.heartbeat
		s.mu.Unlock()
	}
	if fn != nil {
		fn(rpc)
	} else {
		select {
		case s.consume <- rpc:
		case <-s.shutdown:
			return raft.ErrTransportShutdown
		}
	}
	select {
	case resp := <-respCh:
		msg := ""
		if resp.Error != nil {
			msg = resp.Error.Error()
		}
		if err := enc.Encode(msg); err != nil {
			return err
		}
		return enc.Encode(resp.Response)
	case <-s.shutdown:
		return raft.ErrTransportShutdown
	}
}

// setHeartbeatHandler implements raft.Transport's SetHeartbeatHandler.
func (s *rpcServer) setHeartbeatHandler(fn func(raft.RPC)) {
	s.mu.Lock()
	s.heartbeat = fn
	s.mu.Unlock()
}

// close stops accepting, ends every connection and waits for their
// goroutines.
func (s *rpcServer) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.shutdown)
	conns := s.conns
	s.conns = map[net.Conn]struct{}{}
	s.mu.Unlock()
	err := s.ln.Close()
	for c := range conns {
		_ = c.Close()
	}
	s.wg.Wait()
	return err
}
