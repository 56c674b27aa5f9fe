//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package client

import "syscall"

// alive reports whether an idle connection is still open and quiet:
// whether the node has not closed it (end of file), reset it, or sent
// anything since the last answer. It peeks at the socket without
// blocking, one system call. Bytes pending on an idle TLS connection are
// most likely the node's close_notify alert; the session tickets a TLS 1.3
// server sends after the handshake were read with the first answer (a
// connection is only kept once it has carried a request).
func (c *conn) alive() bool {
	if c.tcp == nil {
		return true
	}
	rc, err := c.tcp.SyscallConn()
	if err != nil {
		return false
	}
	var rerr error
	var b [1]byte
	if err := rc.Read(func(fd uintptr) bool {
		_, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait
	}); err != nil {
		return false
	}
	// Nothing pending: open and quiet. Anything else (bytes, the end of
	// the stream, an error) means the connection is of no further use.
	return rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
}
