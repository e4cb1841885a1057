package peercred

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// procRoot is where the kernel's socket tables are.
const procRoot = "/proc/net/"

// The tables' st column for TIME_WAIT, and how many columns a full
// socket's line has (a TIME_WAIT mini socket's has 12).
const (
	stateTimeWait    = "06"
	fullSocketFields = 17
)

func lookup(server, client *net.TCPAddr) (uint32, error) {
	family, file := diagFamily(client)
	// The client's socket: local address client, peer server.
	if uid, err := diagLookup(family, client, server); !errors.Is(err, errDiagUnavailable) {
		return uid, err
	}
	want := [2]string{encodeAddr(client), encodeAddr(server)}
	if uid, err := scan(procRoot+file, want); err == nil {
		return uid, nil
	}
	// An IPv4 client of a dual-stack listener appears as ::ffff:a.b.c.d in tcp6.
	if file == "tcp" {
		c6 := &net.TCPAddr{IP: client.IP.To16(), Port: client.Port}
		s6 := &net.TCPAddr{IP: server.IP.To16(), Port: server.Port}
		return scan(procRoot+"tcp6", [2]string{encodeAddr6(c6), encodeAddr6(s6)})
	}
	return 0, ErrUnknown
}

// diagFamily is the address family and procfs table of a's socket.
func diagFamily(a *net.TCPAddr) (family int, file string) {
	if a.IP.To4() == nil {
		return unix.AF_INET6, "tcp6"
	}
	return unix.AF_INET, "tcp"
}

// scan finds the line whose local and remote address columns equal want and
// returns its uid column.
func scan(path string, want [2]string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrUnknown, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<16)
	first := true
	for sc.Scan() {
		if first { // header line
			first = false
			continue
		}
		fields := bytes.Fields(sc.Bytes())
		// sl local rem st tx:rx tr:when retrnsmt uid ...
		if len(fields) < 8 {
			continue
		}
		if string(fields[1]) != want[0] || string(fields[2]) != want[1] {
			continue
		}
		if string(fields[3]) == stateTimeWait || len(fields) < fullSocketFields {
			// The mini socket the kernel keeps after a close (TIME_WAIT,
			// or FIN_WAIT2 once its process is gone): printed with uid
			// 0, which is nobody's answer. (A full socket without an
			// inode is checked below, as ownerless does.)
			continue
		}
		uid, err := strconv.ParseUint(string(fields[7]), 10, 32)
		if err != nil {
			return 0, ErrUnknown
		}
		if inode := string(fields[9]); inode == "0" && uid == 0 {
			return 0, ErrUnknown // no socket file: see ownerless
		}
		return uint32(uid), nil
	}
	return 0, ErrUnknown
}

// encodeAddr writes a as procfs does: the address as 32-bit words in host
// byte order, hex, then ":" and the port in hex.
func encodeAddr(a *net.TCPAddr) string {
	if ip4 := a.IP.To4(); ip4 != nil {
		return fmt.Sprintf("%s:%04X", word(ip4), a.Port)
	}
	return encodeAddr6(a)
}

func encodeAddr6(a *net.TCPAddr) string {
	ip := a.IP.To16()
	var s string
	for i := 0; i < 16; i += 4 {
		s += word(ip[i : i+4])
	}
	return fmt.Sprintf("%s:%04X", s, a.Port)
}

// word renders four network-order bytes as the kernel prints them: the
// in-memory 32-bit value (network order) loaded natively, %08X.
func word(b []byte) string {
	return fmt.Sprintf("%08X", binary.NativeEndian.Uint32(b))
}

const supported = true

// unixPeerUID is the uid of the process at the other end of a Unix socket
// connection, as the kernel recorded it when the connection was made
// (SO_PEERCRED).
func unixPeerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	return cred.Uid, nil
}
