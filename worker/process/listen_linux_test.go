package process

import (
	"encoding/binary"
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseProcListener(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the lines below are as a little-endian kernel prints them")
	}
	cases := []struct {
		name, line string
		ip         string
		port       int
		ok         bool
	}{
		{"ipv4 loopback", "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 1 1", "127.0.0.1", 8080, true},
		{"ipv4 any", "   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 1 1", "0.0.0.0", 8080, true},
		{"ipv4 lan", "   2: 0A01A8C0:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 1 1", "192.168.1.10", 80, true},
		{"established, not listening", "   3: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000 0 1 1", "", 0, false},
		{"ipv6 any", "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0 0 0 0 0", "::", 8080, true},
		{"ipv6 loopback", "   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 0 0 0 0 0", "::1", 8080, true},
		{"ipv4-mapped loopback", "   2: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000000000000:0000 0A 0 0 0 0 0", "127.0.0.1", 8080, true},
		{"garbled address", "   4: 0100007:1F90 00000000:0000 0A 0 0 0", "", 0, false},
		{"short line", "   5: 0100007F:1F90", "", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ip, port, ok := parseProcListener(tc.line)
			require.Equal(t, tc.ok, ok)
			if ok {
				require.Equal(t, tc.ip, ip.String())
				require.Equal(t, tc.port, port)
			}
		})
	}
}

// This process's listener on loopback is among its group's sockets and is
// not exposed.
func TestExposedListenerLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	pgid := syscall.Getpgrp()
	require.NotEmpty(t, groupSockets(pgid))
	_, exposed := exposedListener(port, pgid)
	require.False(t, exposed)
}
