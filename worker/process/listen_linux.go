package process

import (
	"bufio"
	"encoding/binary"
	"net"
	"os"
	"strconv"
	"strings"
)

// exposedListener reports a TCP socket of the process group pgid
// listening on port on an address that is not loopback (0.0.0.0, ::, a
// LAN address), as /proc/net/tcp and tcp6 list them for this network
// namespace: a worker told to listen on 127.0.0.1 that binds its port
// there anyway serves the LAN directly, around the node's keys and limits.
// Only the group's own sockets count (another program may hold the same
// port number on another address). addr is the address it listens on.
func exposedListener(port, pgid int) (addr string, found bool) {
	inodes := groupSockets(pgid)
	if len(inodes) == 0 {
		return "", false
	}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if a, ok := scanListeners(f, port, inodes); ok {
			return a, true
		}
	}
	return "", false
}

// groupSockets is the inodes of the sockets open in the processes of
// process group pgid (a worker runs in a session of its own, its pid the
// group's id).
func groupSockets(pgid int) map[string]bool {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	inodes := map[string]bool{}
	for _, d := range procs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || !inGroup(pid, pgid) {
			continue
		}
		fds, err := os.ReadDir("/proc/" + d.Name() + "/fd")
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink("/proc/" + d.Name() + "/fd/" + fd.Name())
			if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
				inodes[strings.TrimSuffix(inode, "]")] = true
			}
		}
	}
	return inodes
}

// inGroup reads the process group of pid from /proc/pid/stat (the fifth
// field; the second, the command, may hold spaces and parentheses).
func inGroup(pid, pgid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(b[i+1:])) // state, ppid, pgrp, ...
	return len(f) >= 3 && f[2] == strconv.Itoa(pgid)
}

// tcpListen is the state of a listening socket in /proc/net/tcp.
const tcpListen = "0A"

func scanListeners(path string, port int, inodes map[string]bool) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if ip, p, ok := parseProcListener(sc.Text()); ok && p == port && !ip.IsLoopback() && len(fields) > 9 && inodes[fields[9]] {
			return net.JoinHostPort(ip.String(), strconv.Itoa(p)), true
		}
	}
	return "", false
}

// parseProcListener parses one line of /proc/net/tcp or tcp6: the local
// address of a socket in the listening state. The address is hex, each
// 32-bit word in the host's byte order (little-endian on every Linux
// architecture Go's binaries here are built for).
func parseProcListener(line string) (ip net.IP, port int, ok bool) {
	fields := strings.Fields(line)
	if len(fields) < 4 || fields[3] != tcpListen {
		return nil, 0, false
	}
	hostHex, portHex, found := strings.Cut(fields[1], ":")
	if !found {
		return nil, 0, false
	}
	if len(hostHex) != 2*net.IPv4len && len(hostHex) != 2*net.IPv6len {
		return nil, 0, false
	}
	raw := make([]byte, len(hostHex)/2)
	for i := 0; i < len(raw); i += 4 {
		word, err := strconv.ParseUint(hostHex[2*i:2*i+8], 16, 32)
		if err != nil {
			return nil, 0, false
		}
		binary.NativeEndian.PutUint32(raw[i:], uint32(word))
	}
	p, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return nil, 0, false
	}
	return net.IP(raw), int(p), true
}
