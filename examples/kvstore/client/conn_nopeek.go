//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package client

// alive cannot peek at the socket on this platform: an idle connection is
// reused until maxIdleAge, and a request sent on one the node closed fails
// (a write with an unknown outcome, a read retried).
func (c *conn) alive() bool { return true }
