package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The client speaks HTTP/1.1 over connections of its own rather than
// through net/http's Transport. A Transport runs two goroutines per
// connection (one writes requests, one reads responses) and hands every
// request and response between them and the caller over channels; for a
// request of a few hundred bytes that costs more CPU than the request
// itself. Here the calling goroutine writes the request and reads the
// response on the connection it holds, one request at a time, and parses
// the answer itself (readResponse). It also tells exactly whether a
// request left this process: the request goes out in one write (two for a
// large value), and nothing was sent unless a write took at least a byte.
//
// Not supported, as the kvstore API does not need them: proxies
// (HTTP_PROXY), HTTP/2, compression, Expect: 100-continue.

const (
	// maxIdlePerHost bounds the idle connections kept to one node: as many
	// as the goroutines that last used the client at once, up to this.
	maxIdlePerHost = 64
	// maxIdleAge is how long an idle connection is kept: a node closes
	// connections idle for its IdleTimeout (2 minutes), and a connection it
	// closed would fail the next request sent on it.
	maxIdleAge = 30 * time.Second
	// dialTimeout bounds a dial and a TLS handshake within an attempt.
	dialTimeout = 5 * time.Second
	// inlineBody is the largest body copied into the request's buffer, to
	// go out with its headers in one write.
	inlineBody = 16 << 10
)

// pool holds a client's idle connections, by scheme://host:port.
type pool struct {
	tls    *tls.Config // for https://; nil: tls.Config's defaults
	dialer net.Dialer

	mu   sync.Mutex
	idle map[string][]*conn
}

// conn is one connection to a node, used by one request at a time.
type conn struct {
	nc        net.Conn
	tcp       *net.TCPConn // the socket under nc, for the liveness check
	br        *bufio.Reader
	buf       []byte // the request being written, reused
	idleSince time.Time
}

func newPool(tlsConfig *tls.Config) *pool {
	return &pool{
		tls:    tlsConfig,
		dialer: net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		idle:   map[string][]*conn{},
	}
}

// get returns an idle connection to base (scheme://host:port) that is
// still open, or dials one by deadline. A failure here sent nothing.
func (p *pool) get(ctx context.Context, deadline time.Time, base string) (*conn, error) {
	now := time.Now()
	for {
		p.mu.Lock()
		list := p.idle[base]
		if len(list) == 0 {
			p.mu.Unlock()
			break
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[base] = list[:len(list)-1]
		p.mu.Unlock()
		// A node that restarted, or closed the connection as idle, has
		// left an end-of-file (or a reset) on it: a write sent on it
		// would be lost with nothing to tell whether it was applied.
		if now.Sub(c.idleSince) < maxIdleAge && c.alive() {
			return c, nil
		}
		c.nc.Close()
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	scheme, host, _ := strings.Cut(base, "://")
	nc, err := p.dialer.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	c := &conn{nc: nc}
	c.tcp, _ = nc.(*net.TCPConn)
	if scheme == "https" {
		cfg := p.tls.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(host)
		}
		tc := tls.Client(nc, cfg)
		hctx, cancel := context.WithTimeout(ctx, dialTimeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			nc.Close()
			return nil, err
		}
		c.nc = tc
	}
	c.br = bufio.NewReaderSize(c.nc, 4<<10)
	return c, nil
}

// put keeps c for the next request to base.
func (p *pool) put(base string, c *conn) {
	c.idleSince = time.Now()
	p.mu.Lock()
	if len(p.idle[base]) < maxIdlePerHost {
		p.idle[base] = append(p.idle[base], c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		c.nc.Close()
	}
}

// closeIdle closes every idle connection.
func (p *pool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = map[string][]*conn{}
	p.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.nc.Close()
		}
	}
}

// errNotSent wraps the failure of an attempt that sent nothing.
type errNotSent struct{ err error }

func (e errNotSent) Error() string { return e.err.Error() }
func (e errNotSent) Unwrap() error { return e.err }

// roundTrip sends req to u (scheme://host:port/path?query) and reads the
// answer, within deadline and ctx. An error wrapped in errNotSent means
// the request certainly did not reach the node.
func (p *pool) roundTrip(ctx context.Context, deadline time.Time, req request, u string) (*response, error) {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok || (scheme != "http" && scheme != "https") {
		return nil, errNotSent{fmt.Errorf("kvstore: unsupported URL %q", u)}
	}
	host, target := rest, "/"
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		host, target = rest[:i], rest[i:]
	}
	// Both go into the request as they are: a space or a control
	// character would break it up (the paths the client builds are
	// escaped, and url.Parse refuses such a redirect).
	if host == "" || strings.IndexFunc(rest, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return nil, errNotSent{fmt.Errorf("kvstore: bad URL %q", u)}
	}
	base := scheme + "://" + host
	c, err := p.get(ctx, deadline, base)
	if err != nil {
		return nil, errNotSent{timeoutCause(ctx, err)}
	}
	// The deadline bounds the whole exchange; the context's end, if it
	// comes first, cuts it short through the same deadline.
	c.nc.SetDeadline(deadline) //nolint:errcheck // a closed conn fails the write
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) }) //nolint:errcheck
	}
	resp, reuse, err := c.exchange(req, host, target)
	if stop != nil && !stop() {
		// ctx ended: its deadline may be on the connection, or be put on
		// it at any moment, even once another request holds it.
		reuse = false
	}
	if err != nil {
		c.nc.Close()
		return nil, timeoutCause(ctx, err)
	}
	if reuse {
		p.put(base, c)
	} else {
		c.nc.Close()
	}
	return resp, nil
}

// exchange writes the request and reads the answer on c. reuse reports
// whether c may carry another request.
func (c *conn) exchange(req request, host, target string) (_ *response, reuse bool, err error) {
	b := append(c.buf[:0], req.method...)
	b = append(b, ' ')
	b = append(b, target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	if req.body != nil {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(req.body)), 10)
		b = append(b, "\r\n"...)
	}
	if req.ifMatch != "" {
		b = append(b, "If-Match: "...)
		b = append(b, req.ifMatch...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	large := len(req.body) > inlineBody
	if !large {
		b = append(b, req.body...)
	}
	n, err := c.nc.Write(b)
	c.buf = b[:0]
	if cap(c.buf) > 2*inlineBody {
		c.buf = nil // do not keep a large value's buffer
	}
	if err != nil {
		if n == 0 {
			err = errNotSent{err}
		}
		return nil, false, err
	}
	if large {
		if _, err := c.nc.Write(req.body); err != nil {
			return nil, false, err
		}
	}
	resp, reuse, err := readResponse(c.br)
	return resp, reuse && c.br.Buffered() == 0, err
}

// maxAnswer bounds the body of an answer the client reads whole: a value
// (1 MiB at most) or an admin call's JSON.
const maxAnswer = 64 << 20

// readResponse reads one answer from br (RFC 9112): its status, the
// headers the client uses, and its body, delimited by Content-Length, by
// chunks, or by the end of the connection. reuse reports whether the
// connection may carry another request. (net/http's ReadResponse does the
// same for any answer, at several times the CPU: it keeps every header.)
func readResponse(br *bufio.Reader) (resp *response, reuse bool, err error) {
	resp = &response{}
	var (
		length          int64 = -1
		chunked, closed bool
	)
	for {
		line, err := readLine(br)
		if err != nil {
			return nil, false, err
		}
		// HTTP/1.1 200 OK
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
			return nil, false, fmt.Errorf("kvstore: malformed status line %q", line)
		}
		closed = line[7] == '0' // HTTP/1.0: no keep-alive unless asked, which the client does not
		resp.code = 0
		for _, d := range line[9:12] {
			if d < '0' || d > '9' {
				return nil, false, fmt.Errorf("kvstore: malformed status line %q", line)
			}
			resp.code = 10*resp.code + int(d-'0')
		}
		for {
			line, err := readLine(br)
			if err != nil {
				return nil, false, err
			}
			if len(line) == 0 {
				break
			}
			name, value, ok := bytes.Cut(line, []byte(":"))
			if !ok || len(name) == 0 || line[0] == ' ' || line[0] == '\t' {
				return nil, false, fmt.Errorf("kvstore: malformed header line %q", line)
			}
			value = bytes.TrimSpace(value)
			switch {
			case headerIs(name, "Content-Length"):
				n, err := strconv.ParseInt(string(value), 10, 64)
				if err != nil || n < 0 || (length >= 0 && n != length) {
					return nil, false, fmt.Errorf("kvstore: bad Content-Length %q", value)
				}
				length = n
			case headerIs(name, "Transfer-Encoding"):
				if !bytes.EqualFold(value, []byte("chunked")) {
					return nil, false, fmt.Errorf("kvstore: unsupported Transfer-Encoding %q", value)
				}
				chunked = true
			case headerIs(name, "Connection"):
				for _, opt := range bytes.Split(value, []byte(",")) {
					closed = closed || bytes.EqualFold(bytes.TrimSpace(opt), []byte("close"))
				}
			case headerIs(name, "X-Revision"):
				resp.revision = string(value)
			case headerIs(name, "Location"):
				resp.location = string(value)
			}
		}
		// An interim answer (100 Continue) precedes the real one.
		if resp.code >= 200 || resp.code < 100 || resp.code == http.StatusSwitchingProtocols {
			break
		}
		length, chunked, resp.revision, resp.location = -1, false, "", ""
	}
	switch {
	case resp.code == http.StatusNoContent, resp.code == http.StatusNotModified:
	case chunked:
		// Chunked wins over Content-Length (RFC 9112 §6.3).
		if resp.body, err = io.ReadAll(io.LimitReader(httputil.NewChunkedReader(br), maxAnswer+1)); err != nil {
			return nil, false, noEOF(err)
		}
		for { // trailers, up to the empty line
			line, err := readLine(br)
			if err != nil {
				return nil, false, err
			}
			if len(line) == 0 {
				break
			}
		}
	case length > maxAnswer:
		return nil, false, fmt.Errorf("kvstore: an answer of %d bytes is larger than %d", length, maxAnswer)
	case length >= 0:
		resp.body = make([]byte, length)
		if _, err := io.ReadFull(br, resp.body); err != nil {
			return nil, false, noEOF(err)
		}
	default: // to the end of the connection
		if resp.body, err = io.ReadAll(io.LimitReader(br, maxAnswer+1)); err != nil {
			return nil, false, err
		}
		closed = true
	}
	if len(resp.body) > maxAnswer {
		return nil, false, fmt.Errorf("kvstore: an answer larger than %d bytes", maxAnswer)
	}
	return resp, !closed, nil
}

// readLine returns the next line of br without its CRLF (or LF). The
// slice is valid until the next read.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull:
		return nil, errors.New("kvstore: a header line longer than 4 KiB")
	case err != nil:
		return nil, noEOF(err)
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// headerIs reports whether a header's name is name (case-insensitive).
func headerIs(got []byte, name string) bool {
	return len(got) == len(name) && strings.EqualFold(string(got), name)
}

// noEOF turns the end of the connection in the middle of an answer into
// io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// timeoutCause returns err, or, when it is the connection's deadline
// passing, an error that says so and wraps context.DeadlineExceeded (or
// ctx's error, if ctx ended).
func timeoutCause(ctx context.Context, err error) error {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return err
	}
	cause := context.DeadlineExceeded
	if ctx.Err() != nil {
		cause = ctx.Err()
	}
	var ns errNotSent
	if errors.As(err, &ns) {
		return errNotSent{fmt.Errorf("%w (%v)", cause, ns.err)}
	}
	return fmt.Errorf("%w (%v)", cause, err)
}
