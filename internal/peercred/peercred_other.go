//go:build !linux

package peercred

import "net"

func lookup(server, client *net.TCPAddr) (uint32, error) { return 0, ErrUnknown }

const supported = false

func unixPeerUID(*net.UnixConn) (uint32, error) { return 0, ErrUnknown }
