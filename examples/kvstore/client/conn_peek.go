//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package client

import (
	"crypto/tls"
	"syscall"
)

// alive reports whether an idle connection is still open: whether the
// node has not closed it (end of file), reset it, or, on a plain
// connection, sent bytes no request asked for. It peeks at the socket
// without blocking, one system call. A TLS connection may hold records
// the node sent after the handshake (session tickets): those are read
// with the next answer.
func (c *conn) alive() bool {
	if c.tcp == nil {
		return true
	}
	rc, err := c.tcp.SyscallConn()
	if err != nil {
		return false
	}
	var n int
	var rerr error
	var b [1]byte
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait
	}); err != nil {
		return false
	}
	switch {
	case rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK:
		return true // nothing pending: open and quiet
	case rerr != nil, n == 0:
		return false // reset, or closed by the node
	}
	_, isTLS := c.nc.(*tls.Conn)
	return isTLS
}
