package peercred

import (
	"encoding/binary"
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

// The kernel's sock_diag interface (NETLINK_SOCK_DIAG, what ss uses) looks
// one socket up by its four addresses in the socket hash, so the cost of a
// lookup does not grow with the number of sockets on the machine. Reading
// /proc/net/tcp walks and prints every socket: at a hundred nodes with
// their workers on one machine that is thousands of lines, 10-20 ms of
// kernel time on each new API connection and each CLI call.
//
// Layouts (include/uapi/linux/netlink.h, inet_diag.h), host byte order
// except ports and addresses, which are in network order:
//
//	nlmsghdr        len u32, type u16, flags u16, seq u32, pid u32  (16 bytes)
//	inet_diag_req_v2 family u8, protocol u8, ext u8, pad u8, states u32, id (56 bytes)
//	inet_diag_sockid sport be16, dport be16, src [16]byte, dst [16]byte,
//	                 if u32, cookie [2]u32                           (48 bytes)
//	inet_diag_msg    family u8, state u8, timer u8, retrans u8, id,
//	                 expires u32, rqueue u32, wqueue u32, uid u32, inode u32 (72 bytes)
const (
	nlmsgHdrLen   = 16
	diagReqLen    = 56
	diagMsgLen    = 72
	diagIDOffset  = 4
	diagUIDOffset = 64
	// TCP states as the kernel numbers them (include/net/tcp_states.h).
	tcpSynRecv  = 3
	tcpTimeWait = 6
	// A timewait mini socket reports timer 3; full sockets never do.
	timerTimeWait = 3
	// diagTimeout bounds the wait for the kernel's answer.
	diagTimeoutMicros = 200_000
)

// errDiagUnavailable: sock_diag gave no definite answer (no netlink here,
// no inet_diag module, the socket is not in the hash); the caller falls
// back to procfs. The kernel answers ENOENT both for "no such socket" and
// for "no diag handler for this family", so neither can be trusted alone.
var errDiagUnavailable = errors.New("peercred: sock_diag unavailable")

// diagLookup asks the kernel for the TCP socket whose local address is
// local and whose peer is remote, and returns its owner's uid. family is
// AF_INET or AF_INET6 (an IPv4 pair is also matched in the v4-mapped form
// a dual-stack socket reports it in). ErrUnknown means the socket was
// found and has no owner to report (see ownerless), which procfs would not
// know either.
func diagLookup(family int, local, remote *net.TCPAddr) (uint32, error) {
	req := make([]byte, nlmsgHdrLen+diagReqLen)
	const seq = 1 // each lookup has its own socket
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], seq)
	r := req[nlmsgHdrLen:]
	r[0], r[1] = byte(family), unix.IPPROTO_TCP
	ne.PutUint32(r[4:], ^uint32(0)) // every state
	if !putSockID(r[8:56], family, local, remote) {
		return 0, errDiagUnavailable
	}

	// The same pair as a dual-stack (AF_INET6) socket reports it.
	var mapped []byte
	if family == unix.AF_INET {
		mapped = make([]byte, 48)
		putSockID(mapped, unix.AF_INET6, local, remote)
		mapped = mapped[:36]
	}

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, errDiagUnavailable
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(diagTimeoutMicros * 1000)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, errDiagUnavailable
	}
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, errDiagUnavailable
	}
	buf := make([]byte, 4096)
	for {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return 0, errDiagUnavailable
		}
		if nl, ok := from.(*unix.SockaddrNetlink); !ok || nl.Pid != 0 {
			continue // only the kernel answers
		}
		for b := buf[:n]; len(b) >= nlmsgHdrLen; {
			l := int(ne.Uint32(b[0:]))
			if l < nlmsgHdrLen || l > len(b) {
				return 0, errDiagUnavailable
			}
			typ, mseq, data := ne.Uint16(b[4:]), ne.Uint32(b[8:]), b[nlmsgHdrLen:l]
			b = b[min((l+3)&^3, len(b)):] // messages are 4-byte aligned
			if mseq != seq {
				continue
			}
			switch typ {
			case unix.NLMSG_ERROR:
				return 0, errDiagUnavailable
			case unix.SOCK_DIAG_BY_FAMILY:
				return parseDiagMsg(data, req[nlmsgHdrLen+8:nlmsgHdrLen+8+36], mapped)
			}
		}
	}
}

// putSockID writes an inet_diag_sockid for the socket local→remote,
// without its interface and with "no cookie".
func putSockID(id []byte, family int, local, remote *net.TCPAddr) bool {
	binary.BigEndian.PutUint16(id[0:], uint16(local.Port))
	binary.BigEndian.PutUint16(id[2:], uint16(remote.Port))
	src, dst := local.IP.To16(), remote.IP.To16()
	if family == unix.AF_INET {
		src, dst = local.IP.To4(), remote.IP.To4()
	}
	if src == nil || dst == nil {
		return false
	}
	copy(id[4:20], src)
	copy(id[20:36], dst)
	binary.NativeEndian.PutUint32(id[40:], ^uint32(0))
	binary.NativeEndian.PutUint32(id[44:], ^uint32(0))
	return true
}

// parseDiagMsg reads the uid of an inet_diag_msg, checking that it
// describes the socket asked for (ports and addresses: want, the first 36
// bytes of the request's sockid, or mapped, the same in v4-mapped form)
// and that it has an owner to report.
func parseDiagMsg(m, want, mapped []byte) (uint32, error) {
	if len(m) < diagMsgLen {
		return 0, errDiagUnavailable
	}
	id := string(m[diagIDOffset : diagIDOffset+36])
	if id != string(want) && (mapped == nil || id != string(mapped)) {
		return 0, errDiagUnavailable
	}
	uid, inode := binary.NativeEndian.Uint32(m[diagUIDOffset:]), binary.NativeEndian.Uint32(m[diagUIDOffset+4:])
	if ownerless(m[1], m[2], uid, inode) {
		return 0, ErrUnknown
	}
	return uid, nil
}

// ownerless reports whether a socket's uid says nothing about who holds
// it:
//   - mini sockets (TIME_WAIT, FIN_WAIT2 after the process closed it,
//     timer 3; half-open requests, SYN_RECV) are reported with uid 0;
//   - a full socket with no socket file (closed by its process and still
//     sending, or not yet accepted) has inode 0, and older kernels
//     (sock_i_uid reading the socket file's inode) report uid 0 for it,
//     which must not read as root. Newer kernels report the socket's own
//     owner (sk_uid), which is kept.
func ownerless(state, timer byte, uid, inode uint32) bool {
	return state == tcpTimeWait || state == tcpSynRecv || timer == timerTimeWait || (inode == 0 && uid == 0)
}
