package lifecycle_test

import (
	"io"
	"net"
	"sync"
	"testing"
)

// pgProxy forwards TCP connections to PostgreSQL; the test decides what
// happens to new ones (a network fault, PostgreSQL itself is real):
// forwarded, refused (closed at once) or stalled (accepted, never
// forwarded, until the proxy closes). Connections already forwarded are
// not affected.
type pgProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	mode   proxyMode
	conns  []net.Conn
	closed bool
	n      int // connections accepted
	wg     sync.WaitGroup
}

type proxyMode int

const (
	forward proxyMode = iota
	refuse
	stall
)

// startProxy listens on a free port of 127.0.0.1 and forwards to target
// (host:port) until the test ends.
func startProxy(t *testing.T, target string) *pgProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's host:port.
func (p *pgProxy) Addr() string { return p.ln.Addr().String() }

// set decides what happens to the connections accepted from now on.
func (p *pgProxy) set(m proxyMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = m
}

// accepted is how many connections the proxy accepted.
func (p *pgProxy) accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *pgProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		mode := p.mode
		p.n++
		p.mu.Unlock()
		if !p.track(c) {
			return
		}
		switch mode {
		case refuse:
			c.Close()
		case stall:
			// Held open until close.
		case forward:
			p.wg.Add(1)
			go p.pipe(c)
		}
	}
}

func (p *pgProxy) pipe(c net.Conn) {
	defer p.wg.Done()
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(s) {
		return
	}
	defer s.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(s, c)
		s.(*net.TCPConn).CloseWrite()
	}()
	_, _ = io.Copy(c, s)
	c.(*net.TCPConn).CloseWrite()
	<-done
}

// track records c to be cut by close; false (c closed) when the proxy is
// closed already.
func (p *pgProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

// close stops accepting and cuts every connection.
func (p *pgProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
